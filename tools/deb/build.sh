#!/bin/sh
# make deb: builds BUILD/deb/zcd_<version>_<arch>.deb.  The source tree's
# files (tracked, and new ones git does not ignore: never a build
# directory) are copied to BUILD/deb/zcd-<version>/, tools/deb/debian/
# becomes its debian/ with a changelog for core/version.h's version, and
# dpkg-buildpackage builds the binary package there.  lintian then checks
# the .deb: any error fails the build.
# Usage: tools/deb/build.sh BUILD
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
build=${1:?usage: tools/deb/build.sh BUILD}
case $build in
    /*) ;;
    *) build="$top/$build" ;;
esac

version=$(awk '$1 == "#define" && $2 ~ /^ZCD_VERSION_(MAJOR|MINOR|PATCH)$/ { v[$2] = $3 }
    END { print v["ZCD_VERSION_MAJOR"] "." v["ZCD_VERSION_MINOR"] "." v["ZCD_VERSION_PATCH"] }' \
    core/version.h)
case $version in
    [0-9]*.[0-9]*.[0-9]*) ;;
    *) echo "deb: no version in core/version.h (found \`$version')" >&2; exit 1 ;;
esac
arch=$(dpkg --print-architecture)
out="$build/deb"
src="$out/zcd-$version"
deb="$out/zcd_${version}_$arch.deb"

echo "deb: copying the source tree to $src"
rm -rf "$src" "$out"/zcd_"$version"_* "$out"/zcd-dbgsym_"$version"_*
mkdir -p "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Listed but deleted files are skipped, and so is the output directory
    # should BUILD be inside the tree and not ignored.
    rel=${out#"$top"/}
    git ls-files -z --cached --others --exclude-standard \
        | tr '\0' '\n' \
        | while IFS= read -r f; do
              case $f in "$rel"/*) continue ;; esac
              [ -f "$f" ] || [ -L "$f" ] && printf '%s\n' "$f"
          done \
        | tar -cf - --no-recursion -T - \
        | tar -xf - -C "$src"
else
    tar -cf - --exclude=./.git --exclude='./build' --exclude='./build-*' . | tar -xf - -C "$src"
fi
rm -rf "$src/debian"
cp -R tools/deb/debian "$src/debian"

# The changelog's date is the last commit's (the same tree gives the same
# package), or now outside git.
when=$(git log -1 --format=%ct 2>/dev/null || date +%s)
cat >"$src/debian/changelog" <<EOF
zcd ($version) unstable; urgency=medium

  * zcd $version, packaged from the source tree.

 -- zcd developers <dev@zcd.invalid>  $(date -u -R -d "@$when")
EOF

echo "deb: dpkg-buildpackage in $src"
(cd "$src" && dpkg-buildpackage -b --no-sign -jauto) >"$out/build.log" 2>&1 || {
    tail -n 40 "$out/build.log" >&2
    echo "deb: dpkg-buildpackage failed; the whole log is $out/build.log" >&2
    exit 1
}
[ -f "$deb" ] || { echo "deb: dpkg-buildpackage made no $deb" >&2; exit 1; }

echo "deb: lintian $deb"
lintian --fail-on error --display-info "$deb" || {
    echo "deb: lintian found errors in $deb" >&2
    exit 1
}
echo "deb: built $deb"
