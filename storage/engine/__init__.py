"""The storage engine (media agent): repositories, the content-addressed chunk store, restore
points, verify, prune, garbage collection and copies. No Django imports in here: the engine runs
stand-alone (``python -m storage``) with only a repository and its passphrase. The format is
specified in docs/repository-format.md."""
