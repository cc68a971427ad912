#!/usr/bin/env bash
# Everything `make demo`, `make dev` and `make test` need on a fresh Debian machine:
# Java and the MariaDB JDBC jar from Debian's packages, a reachable MariaDB, and the virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=""
apt_install() {
  if [[ -z "$apt_updated" ]]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v java >/dev/null || { echo "Installing Java 17"; apt_install openjdk-17-jre-headless; }
# javac compiles the local file system Spark writes the lake through (rental_platform/local/file_system.py).
command -v javac >/dev/null || { echo "Installing the Java compiler"; apt_install openjdk-17-jdk-headless || echo "No Java compiler: Spark uses Hadoop's slower local file system"; }
[[ -f /usr/share/java/mariadb-java-client.jar ]] || { echo "Installing the MariaDB JDBC driver"; apt_install libmariadb-java; }

# The source database: only the default local one is started here; any other must be reachable.
if [[ -z "${RENTAL_MYSQL_URL:-}" ]]; then
  command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || { echo "Installing MariaDB"; apt_install mariadb-server; }
  if ! mariadb-admin --host=127.0.0.1 --user=root ping >/dev/null 2>&1; then
    echo "Starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for _ in $(seq 60); do
      mariadb-admin --host=127.0.0.1 --user=root ping >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  mariadb-admin --host=127.0.0.1 --user=root ping >/dev/null || { echo "MariaDB at 127.0.0.1:3306 is not reachable" >&2; exit 1; }
fi

# The virtualenv, reinstalled only when the pinned requirements change.
stamp=.venv/.installed
if [[ ! -f $stamp || requirements.txt -nt $stamp || pyproject.toml -nt $stamp ]]; then
  echo "Installing Python dependencies into .venv"
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  # -qq: setuptools reports every editable install as a warning ("Editable installation",
  # its InformationOnly class: "not the most appropriate tool for the job"), which pip prints.
  .venv/bin/pip install -qq --no-deps -e .
  touch $stamp
fi

# The local Spark JVM's class-data archive: built once per environment (about half a minute),
# it makes every later local run start faster. It trains on a scratch lake: it never touches the source.
.venv/bin/rental-platform class-archive --if-missing

# The Dagster instance: runs launched from the CLI and the UI land in the same place.
mkdir -p "${DAGSTER_HOME:-.rental/dagster_home}"
cp instance/dagster.yaml "${DAGSTER_HOME:-.rental/dagster_home}/dagster.yaml"
