from django.apps import AppConfig


class BackupConsoleConfig(AppConfig):
    name = "backupconsole"
    verbose_name = "Console core (roles, audit)"
