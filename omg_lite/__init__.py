"""omg_lite."""
