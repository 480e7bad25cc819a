"""SpotOn engine: multi-camera person tracking without orchestration or servers.

Everything in this package is pure Python over numpy/torch/OpenCV: no Prefect,
no FastAPI, no module-level state. Flows, tasks and the API build on it.
"""

__version__ = "0.1.0"
