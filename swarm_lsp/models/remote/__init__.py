"""Any OpenAI-compatible server: chat backend (backend.py), embedder (embedder.py), their HTTP (http.py)."""
