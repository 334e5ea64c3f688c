"""The workflow engine: load a HyperFlow workflow, schedule it, dispatch to pools or jobs."""
