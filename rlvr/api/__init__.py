"""The REST service: ``create_app(settings)`` in :mod:`rlvr.api.app` (FastAPI), its settings
in :mod:`rlvr.api.settings`, request/response models in :mod:`rlvr.api.models`, submission
checks in :mod:`rlvr.api.validation`, routers in :mod:`rlvr.api.routes`, the dashboard in
``static/``. Importing this package stays cheap (no FastAPI, torch or Ray)."""
