"""One module per experiment; each ``run`` trains, writes CSV + JSON (with the config) + PNG, returns a summary."""
