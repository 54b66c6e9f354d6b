# Certificate authority, serving certificates, client certificates and the
# service-account signing key for the test cluster, made fresh on every start
# with openssl (sourced by `up`, not run).

# new_key FILE: an ECDSA P-256 key (fast to generate, accepted everywhere).
new_key() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null
}

# new_ca DIR NAME: a self-signed CA as DIR/NAME.crt and DIR/NAME.key.
new_ca() {
  local dir=$1 name=$2
  new_key "$dir/$name.key"
  openssl req -x509 -new -key "$dir/$name.key" -sha256 -days 7 \
    -subj "/CN=countersign-test-$name" -out "$dir/$name.crt" 2>/dev/null
}

# signed_cert DIR CA NAME SUBJECT EXT: a certificate DIR/NAME.crt signed by
# DIR/CA, with the given subject and openssl extension lines.
signed_cert() {
  local dir=$1 ca=$2 name=$3 subject=$4 ext=$5
  new_key "$dir/$name.key"
  openssl req -new -key "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr" 2>/dev/null
  printf '%b\n' "$ext" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" \
    -CAcreateserial -days 7 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

# serving_cert DIR CA NAME SANS: a TLS server certificate.
serving_cert() {
  signed_cert "$1" "$2" "$3" "/CN=$3" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=$4"
}

# client_cert DIR CA NAME USER [GROUP...]: a client certificate whose CN is the
# user name and whose O entries are its groups, as the API server reads them.
client_cert() {
  local dir=$1 ca=$2 name=$3 user=$4
  shift 4
  local subject="/CN=$user" group
  for group in "$@"; do subject="/O=$group$subject"; done
  signed_cert "$dir" "$ca" "$name" "$subject" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"
}
