"""`python -m router_lite serve ...`"""

from router_lite.cli import main

main()
