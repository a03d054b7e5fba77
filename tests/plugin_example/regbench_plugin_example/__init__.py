"""Example regbench plugin: two regularizers found through the ``regbench.regularizers`` entry points."""
