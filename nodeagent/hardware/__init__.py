"""Device inventory as llama.cpp sees it (probed in a subprocess), plus psutil for the host."""
