# Shared by tools/sanitize.sh and tools/valgrind.sh (sourced, not run): build
# fastrnn in a throw-away copy of the sources. Expects $here (the checkout), $ref
# (the commit to copy), $working_tree (1: copy the checkout as it is instead) and
# $PY (the Python to build with).

copy_tree() {  # copy_tree DEST: a clean copy of the sources, no build outputs
    local dest=$1
    rm -rf "$dest"
    mkdir -p "$dest"
    if [ "$working_tree" = 1 ]; then
        (cd "$here" && git ls-files -z --cached --others --exclude-standard \
            | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$dest"
    else
        (cd "$here" && git archive "$ref") | tar -xf - -C "$dest"
    fi
}

build() {  # build DEST ENV...: cythonize + compile in place inside the copy
    local dest=$1; shift
    echo "== building in $dest with $*"
    (cd "$dest" && env "$@" "$PY" setup.py -q build_ext --inplace -j 2 \
        > build.log 2>&1) || { tail -40 "$dest/build.log"; return 1; }
    grep -E "^fastrnn: OpenMP" "$dest/build.log" || true
}
