"""ghhook: a GitHub push webhook receiver that deploys a clone without blocking."""

__version__ = "0.1.0"
