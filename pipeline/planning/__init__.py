"""The planning wing, no engine: settings, the source tree's layout, Dockerfiles and templates,
the deployment's third-party images, the files the prepare step makes (TLS folder, downloads),
the deployment kit, and the plan."""
