# Sourced by the other scripts: puts cargo and Debian's sbin tools on PATH.
if [ -d "$HOME/.cargo/bin" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi
PATH="$PATH:/usr/sbin:/sbin"
export PATH
