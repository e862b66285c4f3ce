"""rlvr: reinforcement learning from verifiable rewards, as a service.

Packages: ``rlvr.config`` (the job spec), ``rlvr.train`` (the loop, learner, algorithms),
``rlvr.rollout`` (HF and vLLM engines), ``rlvr.models`` (locally built tiny models),
``rlvr.data`` (prompt sources), ``rlvr.api`` / ``rlvr.jobs`` (the service).
"""

__version__ = "0.1.0"
