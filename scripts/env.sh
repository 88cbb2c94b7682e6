# Sourced by the other scripts: puts cargo and Debian's sbin tools on PATH.
if [ -d "$HOME/.cargo/bin" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi
PATH="$PATH:/usr/sbin:/sbin"
export PATH
# The Python that has the websockets package (scripts/setup-deps).
if [ -x "$PWD/target/python/bin/python" ]; then
    FEDGATE_PYTHON="$PWD/target/python/bin/python"
    export FEDGATE_PYTHON
fi
