# The two commands the README promises. Both install what they need first (idempotent).
.PHONY: setup demo test lint unit freeze-tests wine-tests

setup:
	bash .ci/setup.sh

demo: setup
	.venv/bin/r4agent demo

test: setup
	bash .ci/test.sh
