"""Chinese first: the UI is 简体中文 unless the user chose English with the switch (the language cookie).

Django's LocaleMiddleware would otherwise follow the browser's Accept-Language, so a workstation with an
English browser would get English without asking for it.
"""


class ChineseFirstMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.META.pop("HTTP_ACCEPT_LANGUAGE", None)
        return self.get_response(request)
