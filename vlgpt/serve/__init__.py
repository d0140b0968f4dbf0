"""An OpenAI-compatible HTTP API and a browser UI for a trained run (`vlgpt serve`, docs/serving.md).

    from vlgpt.serve.app import create_app
    from vlgpt.serve.settings import ServeSettings
    app = create_app(vlgpt.load("runs/demo"), ServeSettings())   # any ASGI server can run it

`vlgpt.serve.settings` imports no web framework, so the CLI can build its flags cheaply; FastAPI and
uvicorn (the `serve` extra) are imported by `app` and `server` only.
"""
