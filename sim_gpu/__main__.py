"""`python -m sim_gpu serve ...`."""

from sim_gpu.cli import main

main()
