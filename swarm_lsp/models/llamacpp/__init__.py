"""llama.cpp through llama-cpp-python: the generation backend (backend.py) and the GGUF embedder
(embedder.py). This package is the only part of swarm-lsp that imports `llama_cpp`."""
