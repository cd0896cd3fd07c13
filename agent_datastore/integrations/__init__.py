"""Adapters that put this package's stores behind the store interfaces of agent frameworks.

Each module needs its framework, installed with the extra of the same name
(``pip install 'agent-datastore[langchain]'`` for ``agent_datastore.integrations.langchain``),
and raises ``ImportError`` naming that extra without it. ``agent_datastore`` itself never
imports this package, so the core works without any framework installed.
"""
