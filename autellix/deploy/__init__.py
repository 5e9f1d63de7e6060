"""Deployment: starting, watching and stopping vLLM engines with the Autellix plugin, and serving the
gateway in front of them.

Module map (one concept each): launch (`autellix engine`: one engine's command line and environment),
lifecycle (one engine process group: start, watch, kill, /dev/shm clean-up, restart delay), leftovers
(what a killed group leaves in /dev/shm), supervisor (local engines of `autellix serve`), ray_engines
(engines placed and restarted by Ray), program_store (the process table shared by gateway replicas on
Ray), serve (`autellix serve`). Imports run one way: deploy uses the gateway and the engine plugin's
settings; neither imports deploy. Importing this package imports neither vLLM nor Ray.
"""
