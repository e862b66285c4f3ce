"""The API's routers, one per resource: jobs, verifiers, tools, evals, system."""
