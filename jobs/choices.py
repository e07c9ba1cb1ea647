from django.db import models


class RuleKind(models.TextChoices):
    TAG = "tag", "Tag"
    FOLDER = "folder", "Folder"
    CLUSTER = "cluster", "Cluster or pool"
    HOST = "host", "Host"
    CONNECTION = "connection", "Connection"
    NAME_PATTERN = "name_pattern", "Name pattern"


class RunKind(models.TextChoices):
    BACKUP = "backup", "Backup"
    RESTORE = "restore", "Restore"
    VERIFY = "verify", "Verify"
    PRUNE = "prune", "Prune"
    GC = "gc", "Garbage collection"
    COPY = "copy", "Secondary copy"


class Trigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"
    API = "api", "API"


class RunState(models.TextChoices):
    QUEUED = "queued", "Queued"
    STARTING = "starting", "Starting"
    WORKING = "working", "Working"
    POST_PROCESSING = "post_processing", "Post-processing"
    WAITING_REPOSITORY = "waiting_repository", "Waiting for repository"
    FINISHED = "finished", "Finished"


class RunResult(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    WARNING = "warning", "Warning"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class TaskKind(models.TextChoices):
    VM = "vm", "Virtual machine"
    DISK = "disk", "Disk"
    PHASE = "phase", "Phase"


class Phase(models.TextChoices):
    SNAPSHOT = "snapshot", "Snapshot"
    TRANSFER = "transfer", "Transfer"
    COMMIT = "commit", "Commit"
    VERIFY = "verify", "Verify"
    CLEANUP = "cleanup", "Cleanup"


class TaskState(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    WARNING = "warning", "Warning"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    SKIPPED = "skipped", "Skipped"


class LogLevel(models.IntegerChoices):
    DEBUG = 10, "Debug"
    INFO = 20, "Info"
    WARNING = 30, "Warning"
    ERROR = 40, "Error"


# A disk task's message when change tracking spared a full read; any other message on a disk that
# was read is the reason it was read in full (jobs/backup.py writes it, the run page reads it).
CHANGED_ONLY_NOTE = "Reading changed blocks only."
