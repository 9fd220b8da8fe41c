"""One error tree for everything the monitor raises on purpose."""

from __future__ import annotations


class MonitorError(Exception):
    """Base of every error the monitor raises deliberately."""


class ConfigError(MonitorError):
    """The configuration cannot be used; the message names the file and the key."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        super().__init__(f"{file}: {key}: {problem}")


class StorageError(MonitorError):
    """The state store cannot be reached or used."""


class StoreMissing(StorageError):
    """A command that only reads found no store where the config points (it never creates one)."""


class StoreDamaged(StorageError):
    """The store's file is corrupt: restore a backup or rebuild it from the drop folder."""


class StoreConflict(StorageError):
    """A write refused by one of the store's unique keys (another writer got there first)."""


class DropFolderError(MonitorError):
    """The drop folder cannot be listed (its permissions, say); nothing in it is lost."""


class PublishError(MonitorError):
    """A feed file cannot be written (a full disk, say): the stories are stored, and the
    next pass writes it again."""


class DeliveryError(MonitorError):
    """A digest could not be delivered (it stays pending and is retried)."""
