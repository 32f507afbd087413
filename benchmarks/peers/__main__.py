"""``python -m benchmarks.peers``: install the peers and compare them with our library."""

from benchmarks.peers import main

main()
