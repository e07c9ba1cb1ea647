from django.db import models


class RepositoryKind(models.TextChoices):
    FILESYSTEM = "filesystem", "Local or mounted filesystem"
    S3 = "s3", "S3-compatible object storage"


class RestorePointState(models.TextChoices):
    COMMITTING = "committing", "Committing"
    COMMITTED = "committed", "Committed"
    VERIFIED = "verified", "Verified"
    CORRUPT = "corrupt", "Corrupt"


# Restore points that can be restored from and built on (not being written, not corrupt).
USABLE_POINT_STATES = (RestorePointState.COMMITTED, RestorePointState.VERIFIED)


class Consistency(models.TextChoices):
    APPLICATION = "application", "Application-consistent"
    CRASH = "crash", "Crash-consistent"
