#!/bin/sh
# `make images`: build the micropipe images with whichever container builder works here.
#
#   images/build.sh            base, torch, damask, dream3d (always in that order: damask and dream3d
#                              start from base)
#   images/build.sh --tags     print "name tag" for each selected image and build nothing
#
# Environment:
#   IMAGES                   the images to build, e.g. "base damask" (default: all four)
#   MICROPIPE_<NAME>_IMAGE   the tag of image <name> (default ghcr.io/micropipe/micropipe-<name>:<package
#                            version>): the variables components/__init__.py reads, so steps run what is built
#   MICROPIPE_IMAGE_BUILDER  docker, podman or buildah; default: docker if its engine answers, else podman,
#                            else buildah (`buildah bud --isolation chroot`, no daemon); "none" builds nothing
#   BUILD_ARGS               "NAME=value ..." passed as --build-arg to every selected image, e.g.
#                            "DREAM3D_SHA256=<sha256>" or, for IMAGES=torch, "CUDA=cu126 BASE_IMAGE=..."
#
# Exit status: 2 when something is missing (builder, base image, checksum), with one line saying what;
# 1 when a build fails (the builder's own output says why).
set -eu

cd "$(dirname "$0")/.."
ALL="base torch damask dream3d"
IMAGES=${IMAGES:-$ALL}
BUILD_ARGS=${BUILD_ARGS:-}
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' micropipe/__init__.py)
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)

die() {
    echo "make images: $*" >&2
    exit 2
}

tag() {  # tag NAME: the image's tag, from MICROPIPE_<NAME>_IMAGE or the package version
    eval "t=\${MICROPIPE_$(echo "$1" | tr '[:lower:]' '[:upper:]')_IMAGE:-}"
    echo "${t:-ghcr.io/micropipe/micropipe-$1:$VERSION}"
}

for name in $IMAGES; do
    case " $ALL " in
        *" $name "*) ;;
        *) die "unknown image '$name' in IMAGES (the images are: $ALL)" ;;
    esac
done
SELECTED=
for name in $ALL; do
    for want in $IMAGES; do
        if [ "$want" = "$name" ]; then
            SELECTED="$SELECTED $name"
            break
        fi
    done
done

if [ "${1:-}" = "--tags" ]; then
    for name in $SELECTED; do echo "$name $(tag "$name")"; done
    exit 0
fi

# --- the builder -------------------------------------------------------------------------------------------
why_not() {  # why_not BUILDER: empty when it works, else why it does not
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "not installed"
        return
    fi
    case $1 in
        docker) docker info >/dev/null 2>&1 || echo "installed, but no Docker engine answers ('docker info' fails)" ;;
        podman) podman info >/dev/null 2>&1 || echo "installed, but 'podman info' fails" ;;
        buildah) buildah --version >/dev/null 2>&1 || echo "installed, but 'buildah --version' fails" ;;
    esac
}

BUILDER=${MICROPIPE_IMAGE_BUILDER:-}
case $BUILDER in
    "")
        reasons=
        for b in docker podman buildah; do
            reason=$(why_not "$b")
            if [ -z "$reason" ]; then
                BUILDER=$b
                break
            fi
            reasons="$reasons${reasons:+; }$b: $reason"
        done
        [ -n "$BUILDER" ] || die "no container builder works here ($reasons). Install docker, podman or" \
            "buildah, or build the images on a machine that has one; nothing was built."
        ;;
    none)
        die "MICROPIPE_IMAGE_BUILDER=none: no container builder, nothing was built." ;;
    docker | podman | buildah)
        reason=$(why_not "$BUILDER")
        [ -z "$reason" ] || die "MICROPIPE_IMAGE_BUILDER=$BUILDER, but $BUILDER is $reason; nothing was built." ;;
    *)
        die "MICROPIPE_IMAGE_BUILDER=$BUILDER: expected docker, podman, buildah or none." ;;
esac

# --- what each image needs, checked before hours of compiling ------------------------------------------------
case " $SELECTED " in
    *" dream3d "*)
        case " $BUILD_ARGS " in
            *" DREAM3D_SHA256="[0-9a-fA-F]*) ;;
            *) die "images/dream3d needs the sha256 of the DREAM.3D archive (BlueQuartz publishes none to pin):" \
                   "download it, check it, and pass BUILD_ARGS=DREAM3D_SHA256=<sha256>; nothing was built." ;;
        esac ;;
esac

build_args() {  # build_args NAME: its build arguments, NAME=value per line, later ones winning
    echo "VERSION=$VERSION"
    echo "REVISION=$REVISION"
    case $1 in damask | dream3d) echo "BASE_IMAGE=$(tag base)" ;; esac
    for a in $BUILD_ARGS; do echo "$a"; done
}

from_images() {  # from_images NAME: the images its Dockerfile starts from (ARG defaults and build args applied)
    build_args "$1" | awk '
        FNR == NR { i = index($0, "="); if (i) arg[substr($0, 1, i - 1)] = substr($0, i + 1); next }
        toupper($1) == "ARG" && !from {
            i = index($2, "=")
            name = i ? substr($2, 1, i - 1) : $2
            if (!(name in arg)) arg[name] = i ? substr($2, i + 1) : ""
            next
        }
        toupper($1) == "FROM" {
            from = 1; k = 2
            if ($2 ~ /^--platform=/) k = 3
            ref = $k
            if (ref ~ /^\$\{?[A-Za-z_][A-Za-z0-9_]*\}?$/) { gsub(/[${}]/, "", ref); ref = arg[ref] }
            if (ref != "scratch" && !(ref in stage)) print ref
            if (toupper($(k + 1)) == "AS") stage[$(k + 2)] = 1
        }' - "images/$1/Dockerfile" | sort -u
}

have_image() {
    case $BUILDER in
        docker) docker image inspect "$1" >/dev/null 2>&1 ;;
        podman) podman image exists "$1" >/dev/null 2>&1 ;;
        buildah) buildah inspect --type image "$1" >/dev/null 2>&1 ;;
    esac
}

BUILT=
for name in $SELECTED; do BUILT="$BUILT $(tag "$name")"; done
CHECKED=$BUILT  # built here, or already found or pulled
for name in $SELECTED; do
    for ref in $(from_images "$name"); do
        [ -n "$ref" ] || die "images/$name/Dockerfile starts from an image no ARG names."
        case " $CHECKED " in *" $ref "*) continue ;; esac
        CHECKED="$CHECKED $ref"
        have_image "$ref" && continue
        echo "make images: pulling $ref"
        if ! out=$("$BUILDER" pull "$ref" 2>&1 >/dev/null); then
            hint=
            for other in $ALL; do
                [ "$ref" = "$(tag "$other")" ] && hint=" Build it first: IMAGES=\"$other $name\"."
            done
            die "cannot pull base image $ref for images/$name/Dockerfile with $BUILDER" \
                "($(echo "$out" | tail -n 1)).$hint Nothing was built."
        fi
    done
done

# --- build -------------------------------------------------------------------------------------------------
for name in $SELECTED; do
    set --
    for a in $(build_args "$name"); do set -- "$@" --build-arg "$a"; done
    case $BUILDER in
        buildah) set -- bud --isolation chroot --layers "$@" ;;
        *) set -- build "$@" ;;
    esac
    echo "make images: building $(tag "$name") (images/$name/Dockerfile) with $BUILDER"
    if ! "$BUILDER" "$@" -f "images/$name/Dockerfile" -t "$(tag "$name")" .; then
        echo "make images: building images/$name/Dockerfile failed (the $BUILDER output above says why)." >&2
        exit 1
    fi
done
echo "make images: built$BUILT"
echo "make images: push each with '$BUILDER push <tag>'; steps pick them up through MICROPIPE_<NAME>_IMAGE."
