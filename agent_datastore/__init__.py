"""agent-datastore: a per-user, per-agent, namespaced JSON key-value store on MongoDB.

>>> import agent_datastore
>>> with agent_datastore.connect("mongomock://") as store:
...     data_store = store.proxy("user-1", "indexer")
...     data_store.set("config", {"timeout": 30})
...     data_store.get("config")
{'timeout': 30}
"""

from ._async import AsyncAgentDataStoreProxy, AsyncDataStore, connect_async
from ._exceptions import DataStoreError, DataStoreUnavailable, HTTPException, VersionConflict
from ._items import Item, ItemInfo
from ._store import AgentDataStoreProxy, DataStore, connect

__all__ = [
    "AgentDataStoreProxy",
    "AsyncAgentDataStoreProxy",
    "AsyncDataStore",
    "DataStore",
    "DataStoreError",
    "DataStoreUnavailable",
    "HTTPException",
    "Item",
    "ItemInfo",
    "VersionConflict",
    "__version__",
    "connect",
    "connect_async",
]

__version__ = "0.1.0"
