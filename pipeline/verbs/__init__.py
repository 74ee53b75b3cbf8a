"""The verbs both doors call: release (build, publish, report) and export (tarballs, bundle)."""
