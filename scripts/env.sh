# Sourced by the other scripts: puts cargo and Debian's sbin tools on PATH.
if [ -d "$HOME/.cargo/bin" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi
PATH="$PATH:/usr/sbin:/sbin"
export PATH
# The Python that has the websockets package (scripts/setup-deps).
if [ -x "$PWD/target/python/bin/python" ]; then
    FEDGATE_PYTHON="$PWD/target/python/bin/python"
    export FEDGATE_PYTHON
fi
# The Node.js that scripts/setup-deps installed when the system's was too old for the web page.
for node_bin in "$PWD"/target/node/node_modules/node-linux-*/bin; do
    if [ -x "$node_bin/node" ]; then PATH="$node_bin:$PATH"; fi
done
export PATH
