#!/usr/bin/env bash
# local-pacs.sh - the project's real local PACS for development, tests and CI:
# Debian's Orthanc with the DICOMweb plugin, on loopback, run as a plain
# background process (no systemd needed), plus demo/NIST loading and run-time modality
# registration.  Debian's orthanc + orthanc-dicomweb packages; Orthanc's configuration keys
# are documented in the Orthanc Book ("Configuration of Orthanc").
#
#   local-pacs.sh start    install Orthanc if missing, start it, wait until it answers
#   local-pacs.sh stop     stop the Orthanc started by this script (by its PID file)
#   local-pacs.sh status   say whether it runs (exit 0) or not (exit 3)
#   local-pacs.sh load [FILE|DIR|--pydicom|--nist|--demo ...]
#                          upload DICOM files over REST; with no argument or --pydicom, a set
#                          of sample files bundled with pydicom (needs $PYTHON with pydicom);
#                          --nist: the NIST IDS-DEPT002-a study (conformance IMG cases);
#                          --demo: both
#   local-pacs.sh register NAME AET HOST PORT
#                          add (or replace) a DICOM modality at run time (C-MOVE destination,
#                          allowed to query/retrieve); not kept across restarts
#   local-pacs.sh wipe     stop it and delete its state directory (storage, log, config)
#
# Settings (environment variables, defaults in brackets):
#   ORTHANC_AET [ORTHANC]          AE title of the PACS
#   ORTHANC_DICOM_PORT [4242]      DICOM port (C-ECHO/C-STORE/C-FIND/C-MOVE/C-GET)
#   ORTHANC_HTTP_PORT [8042]       HTTP port: REST API, DICOMweb under /dicom-web/
#   XDSI_AET [XDSI_IDS]            our own AE title: the only AE allowed to query/retrieve,
#   XDSI_HOST [127.0.0.1]            and the C-MOVE destination, listening on
#   XDSI_PORT [11112]                XDSI_HOST:XDSI_PORT
#   LOCAL_PACS_DIR [${TMPDIR:-/tmp}/xdsi-local-pacs]   config, storage, log, PID file
#   LOCAL_PACS_TIMEOUT [30]        seconds to wait for start/stop
#   LOCAL_PACS_WORKLISTS []        a folder of worklist files (*.wl) the PACS serves as a Modality
#                                  Worklist SCP (Orthanc's ModalityWorklists plugin); empty: none
#   PYTHON [python3]               interpreter with pydicom, for 'load' without arguments
#
# Secure node (issue 13; ITI-19 / PS3.15 B.10), the node's own settings:
#   XDS_TLS [off]                  on or demo: the DICOM port speaks DICOM TLS only (client certificate
#                                  required; C-MOVE to the xdsi modality over TLS too), the HTTP port HTTPS
#                                  only, client certificates required; off: plain.  The HTTPS is a socat TLS
#                                  front on 127.0.0.1:ORTHANC_HTTP_PORT forwarding to Orthanc's plain HTTP on
#                                  ORTHANC_HTTP_BACKEND_PORT [ORTHANC_HTTP_PORT+10000], which Orthanc answers
#                                  from loopback only (RemoteAccessAllowed false): Debian's Orthanc 1.10.1
#                                  crashes (SIGSEGV in a civetweb worker, a null function pointer) on the
#                                  first HTTPS connection with OpenSSL 3 whatever the Ssl* options -- checked
#                                  on this project's Debian 12 machine
#   XDS_TLS_CERT, XDS_TLS_KEY      the certificate (PEM, with its chain; its subjectAltName must name
#                                  127.0.0.1) and key Orthanc presents, on both ports and as an SCU --
#                                  the node's own is fine: the node identity table must then list it
#   XDS_TLS_CA, XDS_TLS_PINNED     comma-separated PEM/DER files (or directories of .pem/.crt/.der/.cer) of
#                                  the CAs and pinned certificates Orthanc trusts (copied into one PEM
#                                  file, LOCAL_PACS_DIR/tls/trusted.pem); a pinned certificate must be
#                                  self-signed here: OpenSSL in Orthanc anchors only at self-signed ones
set -euo pipefail

ORTHANC_AET="${ORTHANC_AET:-ORTHANC}"
ORTHANC_DICOM_PORT="${ORTHANC_DICOM_PORT:-4242}"
ORTHANC_HTTP_PORT="${ORTHANC_HTTP_PORT:-8042}"
XDSI_AET="${XDSI_AET:-XDSI_IDS}"
XDSI_HOST="${XDSI_HOST:-127.0.0.1}"
XDSI_PORT="${XDSI_PORT:-11112}"
# Absolute, because Orthanc reads relative paths in its config relative to the config file.
LOCAL_PACS_DIR="$(realpath -m "${LOCAL_PACS_DIR:-${TMPDIR:-/tmp}/xdsi-local-pacs}")"
LOCAL_PACS_TIMEOUT="${LOCAL_PACS_TIMEOUT:-30}"
LOCAL_PACS_WORKLISTS="${LOCAL_PACS_WORKLISTS:+$(realpath -m "$LOCAL_PACS_WORKLISTS")}"
PYTHON="${PYTHON:-python3}"
# The NIST XDS-I test study used by the conformance IMG cases (36 MR instances, 2 series).
NIST_IMAGES="${NIST_IMAGES:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/conformance/corpus/nist/_imagecache/std/IDS-DEPT002-a/images}"

ORTHANC_BIN=/usr/sbin/Orthanc
DICOMWEB_PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
WORKLIST_PLUGIN=/usr/share/orthanc/plugins/libModalityWorklists.so
CONFIG="$LOCAL_PACS_DIR/orthanc.json"
PIDFILE="$LOCAL_PACS_DIR/orthanc.pid"
LOG="$LOCAL_PACS_DIR/orthanc.log"
XDS_TLS="${XDS_TLS:-off}"
if [ "$ORTHANC_HTTP_PORT" -le 55535 ]; then default_backend=$((ORTHANC_HTTP_PORT + 10000))
else default_backend=$((ORTHANC_HTTP_PORT - 10000)); fi
ORTHANC_HTTP_BACKEND_PORT="${ORTHANC_HTTP_BACKEND_PORT:-$default_backend}"
FRONT_PIDFILE="$LOCAL_PACS_DIR/https-front.pid"
FRONT_LOG="$LOCAL_PACS_DIR/https-front.log"
TLS_DIR="$LOCAL_PACS_DIR/tls"
TRUSTED="$TLS_DIR/trusted.pem"
HTTPS_PEM="$TLS_DIR/https.pem"
CURL_TLS=()
ECHO_TLS=()
if [ "$XDS_TLS" = "off" ]; then
  URL="http://127.0.0.1:$ORTHANC_HTTP_PORT"
else
  URL="https://127.0.0.1:$ORTHANC_HTTP_PORT"
  CURL_TLS=(--cert "${XDS_TLS_CERT:-}" --key "${XDS_TLS_KEY:-}" --cacert "$TRUSTED")
  ECHO_TLS=(+tls "${XDS_TLS_KEY:-}" "${XDS_TLS_CERT:-}" +cf "$TRUSTED")
fi

# Files bundled in the pydicom 3.0.x wheel (no download), with distinct UIDs.
SAMPLE_FILES="CT_small.dcm MR_small.dcm examples_overlay.dcm examples_palette.dcm
examples_ybr_color.dcm rtplan.dcm waveform_ecg.dcm liver_1frame.dcm test-SR.dcm"

say() { echo "local-pacs: $*"; }
die() { echo "local-pacs: error: $*" >&2; exit 1; }

install_if_missing() {
  if [ -x "$ORTHANC_BIN" ] && [ -f "$DICOMWEB_PLUGIN" ] && command -v echoscu >/dev/null \
     && command -v curl >/dev/null && command -v socat >/dev/null; then
    return 0
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "Orthanc is missing and you are not root: apt-get install orthanc orthanc-dicomweb dcmtk curl socat"
    sudo="sudo"
  fi
  say "installing orthanc, orthanc-dicomweb, dcmtk, curl, socat (apt-get)"
  $sudo apt-get update -qq
  # The package's own service is not started where policy-rc.d or the lack of systemd forbids it.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    orthanc orthanc-dicomweb dcmtk curl socat >/dev/null
}

# PID of our Orthanc if it runs, else nothing.
our_pid() {
  [ -f "$PIDFILE" ] || return 0
  local pid; pid="$(cat "$PIDFILE")"
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "Orthanc" ]; then echo "$pid"; fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

answers() {
  curl -sf "${CURL_TLS[@]}" -o /dev/null "$URL/system" &&
    echoscu -aet "$XDSI_AET" -aec "$ORTHANC_AET" "${ECHO_TLS[@]}" 127.0.0.1 "$ORTHANC_DICOM_PORT" >/dev/null 2>&1
}

# One PEM file of every certificate in XDS_TLS_CA and XDS_TLS_PINNED (files, or directories of
# .pem/.crt/.der/.cer; DER is converted), and the HTTPS server's certificate + key in one PEM (Orthanc's
# SslCertificate takes both in one file).
# ITI TF-2a 3.19.6.2.3: the four suites IHE requires, then stronger ones (as xds_core/tls.py CIPHERS).
BCP195_CIPHERS="ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"

write_tls_files() {
  [ -r "${XDS_TLS_CERT:-}" ] || die "XDS_TLS=$XDS_TLS: XDS_TLS_CERT is not a readable file"
  [ -r "${XDS_TLS_KEY:-}" ] || die "XDS_TLS=$XDS_TLS: XDS_TLS_KEY is not a readable file"
  (umask 077; mkdir -p "$TLS_DIR")
  local tmp="$TRUSTED.tmp" item file found=0
  : > "$tmp"
  IFS=',' read -r -a items <<< "${XDS_TLS_CA:-},${XDS_TLS_PINNED:-}"
  for item in "${items[@]}"; do
    item="$(echo "$item" | xargs)"; [ -n "$item" ] || continue
    [ -e "$item" ] || die "trusted certificate $item: no such file or directory"
    while IFS= read -r -d '' file; do
      if grep -q -- "-----BEGIN CERTIFICATE-----" "$file"; then cat "$file" >> "$tmp"; echo >> "$tmp"
      else openssl x509 -inform DER -in "$file" >> "$tmp" || die "$file: not a certificate"; fi
      found=$((found + 1))
    done < <(if [ -d "$item" ]; then
               find "$item" -maxdepth 1 -type f \( -iname '*.pem' -o -iname '*.crt' -o -iname '*.der' -o -iname '*.cer' \) -print0 | sort -z
             else printf '%s\0' "$item"; fi)
  done
  [ "$found" -gt 0 ] || die "XDS_TLS=$XDS_TLS: no trusted certificate (XDS_TLS_CA / XDS_TLS_PINNED)"
  mv "$tmp" "$TRUSTED"
  (umask 077; cat "$XDS_TLS_CERT" "$XDS_TLS_KEY" > "$HTTPS_PEM")
  # Orthanc 1.10.1 has no setting for the DICOM TLS protocol floor, and DCMTK leaves OpenSSL's default (TLS 1.0
  # and 1.1 accepted).  OpenSSL's system-default section, given to Orthanc's process only (OPENSSL_CONF), sets
  # the PS3.15 B.10 / ITI-19 floor: TLS 1.2 and the BCP195 suites.
  cat > "$TLS_DIR/openssl-bcp195.cnf" <<CNF
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_section
[ssl_section]
system_default = bcp195
[bcp195]
MinProtocol = TLSv1.2
CipherString = $BCP195_CIPHERS
CNF
}

write_config() {
  mkdir -p "$LOCAL_PACS_DIR/storage"
  local plugins="\"$DICOMWEB_PLUGIN\"" worklists=""
  if [ -n "$LOCAL_PACS_WORKLISTS" ]; then
    [ -f "$WORKLIST_PLUGIN" ] || die "LOCAL_PACS_WORKLISTS is set but $WORKLIST_PLUGIN is missing (Debian's orthanc package has it)"
    mkdir -p "$LOCAL_PACS_WORKLISTS"
    plugins="$plugins, \"$WORKLIST_PLUGIN\""
    worklists="\"Worklists\" : { \"Enable\" : true, \"Database\" : \"$LOCAL_PACS_WORKLISTS\" },"
  fi
  local tls_options="" use_tls=false dicomweb_ssl=false http_port="$ORTHANC_HTTP_PORT"
  if [ "$XDS_TLS" != "off" ]; then
    write_tls_files
    use_tls=true
    # PS3.15 B.10 on the DICOM port (TLS 1.2+, a client certificate required and verified); HTTP goes to the
    # backend port, behind the HTTPS front (start_front).
    tls_options="
  \"DicomTlsEnabled\" : true,
  \"DicomTlsCertificate\" : \"$XDS_TLS_CERT\",
  \"DicomTlsPrivateKey\" : \"$XDS_TLS_KEY\",
  \"DicomTlsTrustedCertificates\" : \"$TRUSTED\",
  \"DicomTlsRemoteCertificateRequired\" : true,"
    dicomweb_ssl=true
    http_port="$ORTHANC_HTTP_BACKEND_PORT"
  fi
  cat > "$CONFIG" <<EOF
{
  "Name" : "xdsi-local-pacs",$tls_options
  "StorageDirectory" : "$LOCAL_PACS_DIR/storage",
  "IndexDirectory" : "$LOCAL_PACS_DIR/storage",
  "Plugins" : [ $plugins ],
  $worklists

  "HttpServerEnabled" : true,
  "HttpPort" : $http_port,
  "RemoteAccessAllowed" : false,
  "AuthenticationEnabled" : false,

  "DicomServerEnabled" : true,
  "DicomAet" : "$ORTHANC_AET",
  "DicomPort" : $ORTHANC_DICOM_PORT,
  "DicomCheckCalledAet" : true,
  "DicomCheckModalityHost" : true,
  "DicomAlwaysAllowEcho" : true,
  "DicomAlwaysAllowStore" : false,
  "DicomAlwaysAllowFind" : false,
  "DicomAlwaysAllowGet" : false,
  "DicomAlwaysAllowMove" : false,
  "DicomModalities" : {
    "xdsi" : { "AET" : "$XDSI_AET", "Host" : "$XDSI_HOST", "Port" : $XDSI_PORT, "UseDicomTls" : $use_tls }
  },

  "SaveJobs" : false,

  "DicomWeb" : {
    "Enable" : true,
    "Root" : "/dicom-web/",
    "EnableWado" : true,
    "WadoRoot" : "/wado",
    "Ssl" : $dicomweb_ssl
  }
}
EOF
}

front_pid() {
  [ -f "$FRONT_PIDFILE" ] || return 0
  local pid; pid="$(cat "$FRONT_PIDFILE")"
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "socat" ]; then echo "$pid"; fi
}

# The HTTPS front (XDS_TLS): TLS 1.2 floor, the ITI-19 suites (TLS 1.3's own stay on), a client certificate
# required (verify=1) and verified against the trusted set; one forked process per connection.
start_front() {
  [ -z "$(front_pid)" ] || return 0
  nohup socat "OPENSSL-LISTEN:$ORTHANC_HTTP_PORT,bind=127.0.0.1,reuseaddr,fork,cert=$HTTPS_PEM,cafile=$TRUSTED,verify=1,openssl-min-proto-version=TLS1.2,cipher=$BCP195_CIPHERS" \
    "TCP:127.0.0.1:$ORTHANC_HTTP_BACKEND_PORT" </dev/null >"$FRONT_LOG" 2>&1 &
  echo $! > "$FRONT_PIDFILE"
}

stop_front() {
  local pid; pid="$(front_pid)"
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  rm -f "$FRONT_PIDFILE"
}

cmd_start() {
  install_if_missing
  if [ -n "$(our_pid)" ]; then
    say "already running (PID $(our_pid)), $URL"
    return 0
  fi
  local port
  local ports=("$ORTHANC_HTTP_PORT" "$ORTHANC_DICOM_PORT")
  [ "$XDS_TLS" = "off" ] || ports+=("$ORTHANC_HTTP_BACKEND_PORT")
  for port in "${ports[@]}"; do
    if port_in_use "$port"; then die "port $port on 127.0.0.1 is already in use by another program"; fi
  done
  write_config
  # TCP_NODELAY=1: Debian's DCMTK leaves Nagle on, which costs ~40 ms per DIMSE message.
  local tls_env=()
  [ "$XDS_TLS" = "off" ] || tls_env=("OPENSSL_CONF=$TLS_DIR/openssl-bcp195.cnf")
  env "${tls_env[@]}" TCP_NODELAY=1 nohup "$ORTHANC_BIN" "$CONFIG" </dev/null >"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  [ "$XDS_TLS" = "off" ] || start_front
  local waited=0
  until answers; do
    if [ -z "$(our_pid)" ]; then
      tail -n 20 "$LOG" >&2; rm -f "$PIDFILE"; die "Orthanc exited during start (log: $LOG)"
    fi
    if [ "$waited" -ge $((LOCAL_PACS_TIMEOUT * 10)) ]; then
      die "no answer after ${LOCAL_PACS_TIMEOUT}s (log: $LOG); stop it with: $0 stop"
    fi
    sleep 0.1; waited=$((waited + 1))
  done
  [ "$XDS_TLS" = "off" ] || say "DICOM TLS and HTTPS with client certificates (XDS_TLS=$XDS_TLS), trust $TRUSTED"
  say "started (PID $(cat "$PIDFILE")): DICOM $ORTHANC_AET@127.0.0.1:$ORTHANC_DICOM_PORT," \
      "HTTP $URL, DICOMweb $URL/dicom-web, C-MOVE destination $XDSI_AET@$XDSI_HOST:$XDSI_PORT"
}

cmd_stop() {
  stop_front
  local pid; pid="$(our_pid)"
  if [ -z "$pid" ]; then
    rm -f "$PIDFILE"; say "not running"; return 0
  fi
  kill -TERM "$pid"              # Orthanc shuts down cleanly on TERM (takes ~4 s)
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -eq $((LOCAL_PACS_TIMEOUT * 10)) ]; then
      say "no clean stop after ${LOCAL_PACS_TIMEOUT}s, sending KILL to $pid"; kill -KILL "$pid"
    fi
    sleep 0.1; waited=$((waited + 1))
  done
  rm -f "$PIDFILE"
  say "stopped (PID $pid)"
}

cmd_status() {
  local pid; pid="$(our_pid)"
  if [ -n "$pid" ] && answers; then
    say "running (PID $pid): DICOM $ORTHANC_AET@127.0.0.1:$ORTHANC_DICOM_PORT, HTTP $URL, state $LOCAL_PACS_DIR"
    curl -s "${CURL_TLS[@]}" "$URL/statistics" | grep -E '"Count(Patients|Studies|Series|Instances)"' | tr -d ' ,'
    return 0
  fi
  if [ -n "$pid" ]; then
    say "process $pid exists but does not answer"
  else
    say "not running"
  fi
  return 3
}

cmd_load() {
  [ -n "$(our_pid)" ] || die "not running: start it first"
  local sources=() arg want_pydicom=0
  [ "$#" -gt 0 ] || want_pydicom=1
  for arg in "$@"; do
    case "$arg" in
      --pydicom) want_pydicom=1 ;;
      --nist)    [ -d "$NIST_IMAGES" ] || die "NIST study not found at $NIST_IMAGES (set NIST_IMAGES)"
                 sources+=("$NIST_IMAGES") ;;
      --demo)    want_pydicom=1
                 [ -d "$NIST_IMAGES" ] && sources+=("$NIST_IMAGES") ;;
      *)         sources+=("$arg") ;;
    esac
  done
  if [ "$want_pydicom" -eq 1 ]; then
    local dir
    dir="$("$PYTHON" -c 'import os, pydicom.data as d; print(os.path.join(os.path.dirname(d.__file__), "test_files"))')" \
      || die "'$PYTHON' cannot import pydicom: set PYTHON to a venv interpreter, e.g. PYTHON=.venv/bin/python"
    local f
    for f in $SAMPLE_FILES; do sources+=("$dir/$f"); done
  fi
  local ok=0 failed=0 file
  while IFS= read -r -d '' file; do
    if curl -sf "${CURL_TLS[@]}" -o /dev/null -X POST -H 'Content-Type: application/dicom' \
         --data-binary @"$file" "$URL/instances"; then
      ok=$((ok + 1))
    else
      failed=$((failed + 1)); echo "local-pacs: not accepted: $file" >&2
    fi
  done < <(find "${sources[@]}" -type f -print0)
  say "loaded $ok file(s), $failed refused"
  [ "$failed" -eq 0 ] || exit 1
}

cmd_register() {
  [ "$#" -eq 4 ] || die "usage: register NAME AET HOST PORT"
  [ -n "$(our_pid)" ] || die "not running: start it first"
  local use_tls=false
  [ "$XDS_TLS" = "off" ] || use_tls=true
  curl -sf "${CURL_TLS[@]}" -o /dev/null -X PUT "$URL/modalities/$1" \
    -d "{\"AET\":\"$2\",\"Host\":\"$3\",\"Port\":$4,\"UseDicomTls\":$use_tls}" || die "Orthanc refused modality $1"
  say "registered modality $1: $2@$3:$4"
}

cmd_wipe() {
  cmd_stop
  case "$LOCAL_PACS_DIR" in ""|/) die "refusing to delete '$LOCAL_PACS_DIR'";; esac
  rm -rf "$LOCAL_PACS_DIR"
  say "deleted $LOCAL_PACS_DIR"
}

case "${1:-}" in
  start)  cmd_start ;;
  stop)   cmd_stop ;;
  status) cmd_status ;;
  load)   shift; cmd_load "$@" ;;
  register) shift; cmd_register "$@" ;;
  wipe)   cmd_wipe ;;
  *) echo "usage: $0 start|stop|status|load [FILE|DIR|--pydicom|--nist|--demo ...]|register NAME AET HOST PORT|wipe" >&2; exit 2 ;;
esac
