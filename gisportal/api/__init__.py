"""REST API v1 (issue 8): DRF views over the same services as the pages and the commands."""
