"""简体中文 by default whatever the browser asks for; English only through the switch."""
import pytest

pytestmark = pytest.mark.django_db


def test_chinese_even_for_an_english_browser(client):
    page = client.get("/", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()
    assert 'lang="zh-hans"' in page and "图层" in page


def test_switch_to_english_and_back(client):
    client.post("/i18n/setlang/", {"language": "en", "next": "/"})
    assert 'lang="en"' in client.get("/").content.decode()
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    assert "图层" in client.get("/").content.decode()
