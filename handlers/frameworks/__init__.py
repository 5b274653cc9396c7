"""Handler-side adapters for the frameworks applications bring (greenjobs.pool.hooks): each is a setup hook
(``greenjobs.setup = greenjobs.handlers.frameworks.django:setup``) that returns the middleware its jobs need."""
