"""Request handlers of the Amphora API, one module per area; app.py maps routes to them."""
