"""Console pages, one package per area: each has its own views, urls, forms and templates
(``frontend/templates/frontend/<area>/``). ``frontend/urls.py`` includes every area's ``urls``."""
