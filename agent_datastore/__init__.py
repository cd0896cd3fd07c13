"""agent-datastore: a per-user, per-agent, namespaced JSON key-value store on MongoDB.

>>> import agent_datastore
>>> with agent_datastore.connect("mongomock://") as store:
...     data_store = store.proxy("user-1", "indexer")
...     data_store.set("config", {"timeout": 30})
...     data_store.get("config")
{'timeout': 30}
"""

from ._async import AsyncAgentDataStoreProxy, AsyncDataStore, connect_async
from ._exceptions import (
    DataStoreError,
    DataStoreUnavailable,
    HTTPException,
    TokenRejected,
    VersionConflict,
)
from ._items import Item, ItemInfo
from ._remote import AsyncRemoteDataStoreProxy, RemoteDataStoreProxy
from ._store import AgentDataStoreProxy, DataStore, connect
from ._tokens import issue_token

__all__ = [
    "AgentDataStoreProxy",
    "AsyncAgentDataStoreProxy",
    "AsyncDataStore",
    "AsyncRemoteDataStoreProxy",
    "DataStore",
    "DataStoreError",
    "DataStoreUnavailable",
    "HTTPException",
    "Item",
    "ItemInfo",
    "RemoteDataStoreProxy",
    "TokenRejected",
    "VersionConflict",
    "__version__",
    "connect",
    "connect_async",
    "issue_token",
]

__version__ = "0.8.0"
