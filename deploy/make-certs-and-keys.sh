#!/usr/bin/env bash
# Make the certificates and keys of a fedsurv consortium on Flower. Private keys never leave
# the machine they are made on; only the files marked "send" travel.
#
#   coordinator IT, once:
#     make-certs-and-keys.sh ca DIR                  DIR/ca.key (keep offline), DIR/ca.crt (send to every site)
#     make-certs-and-keys.sh server DIR NAME HOST..  DIR/NAME.key, DIR/NAME.pem signed by DIR/ca.*, for HOSTs
#         e.g. server tls server coordinator.example.org       (the public proxy, nginx)
#              server tls superlink superlink localhost 127.0.0.1 (the SuperLink behind it)
#   each site's IT:
#     make-certs-and-keys.sh node DIR SITE           DIR/node.key (stays), DIR/node.key.pub (send to the coordinator)
#   each party (sites and coordinator):
#     make-certs-and-keys.sh fedsurv DIR NAME        DIR/NAME/fedsurv.key (stays), DIR/NAME/fedsurv.pub (send to
#                                                    whoever assembles the roster)
set -euo pipefail
umask 077

die() { echo "error: $*" >&2; exit 2; }
[ $# -ge 2 ] || die "usage: $0 ca|server|node|fedsurv DIR [NAME] [HOST...]"
what=$1; dir=$2; shift 2
mkdir -p "$dir"

case "$what" in
  ca)
    [ -e "$dir/ca.key" ] && die "$dir/ca.key exists; refusing to replace the consortium CA"
    openssl ecparam -name secp384r1 -genkey -noout -out "$dir/ca.key"
    openssl req -x509 -new -key "$dir/ca.key" -sha384 -days 825 -subj "/CN=fedsurv consortium CA" \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$dir/ca.crt"
    chmod 644 "$dir/ca.crt"
    echo "made $dir/ca.crt (send to every site) and $dir/ca.key (keep offline)"
    ;;
  server)
    [ $# -ge 2 ] || die "usage: $0 server DIR NAME HOST [HOST...]"
    name=$1; shift
    [ -f "$dir/ca.key" ] || die "$dir/ca.key not found: make the CA first"
    san=""
    for h in "$@"; do
      if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then san="$san,IP:$h"; else san="$san,DNS:$h"; fi
    done
    openssl ecparam -name secp384r1 -genkey -noout -out "$dir/$name.key"
    openssl req -new -key "$dir/$name.key" -subj "/CN=$1" -out "$dir/$name.csr"
    printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' "${san#,}" \
      > "$dir/$name.ext"
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 397 \
      -sha384 -extfile "$dir/$name.ext" -out "$dir/$name.pem" 2>/dev/null
    rm -f "$dir/$name.csr" "$dir/$name.ext"
    chmod 644 "$dir/$name.pem"
    echo "made $dir/$name.pem and $dir/$name.key for: $*"
    ;;
  node)
    [ $# -eq 1 ] || die "usage: $0 node DIR SITE"
    [ -e "$dir/node.key" ] && die "$dir/node.key exists; refusing to replace it"
    # Flower's SuperNode authentication: ECDSA on a NIST curve, OpenSSH format.
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "$1" -f "$dir/node.key"
    chmod 644 "$dir/node.key.pub"
    echo "made $dir/node.key (stays at the site) and $dir/node.key.pub (send to the coordinator)"
    ;;
  fedsurv)
    [ $# -eq 1 ] || die "usage: $0 fedsurv DIR NAME"
    fedsurv keys init --out "$dir/$1" --name "$1"
    ;;
  *)
    die "unknown kind '$what' (ca, server, node or fedsurv)"
    ;;
esac
