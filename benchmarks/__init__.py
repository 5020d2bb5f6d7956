"""Speed and scale benchmarks; `make bench` runs them all. Results go in benchmarks/README.md."""
