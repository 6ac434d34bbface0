"""Portico's wiring, from deploy/topology.toml.

    topology.py env SERVICE [--url SVC=URL]... [--replicas SVC=URL,URL...]...
        Prints the environment (NAME=value lines) that wires SERVICE to the
        others, given where they answer. scripts/dev.sh runs this.

    topology.py check COMPOSE_JSON K8S_DIR BIN_DIR
        Checks the deployment files against the topology and the services'
        own configuration:
          COMPOSE_JSON  `docker compose config --format json` of the compose
                        file (with .env.example's names filled in)
          K8S_DIR       one JSON file per overlay (`<name>.json`: a list of
                        the rendered objects)
          BIN_DIR       the service binaries (for `<binary> check-config`)
        Fails, listing every disagreement, when a wiring key, a port, a
        probe or the issuer differs, or when a service refuses the
        configuration it would be given (unknown key, a required key unset).

Standard library only (the check's callers convert YAML to JSON).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "deploy" / "topology.toml"


def load():
    with open(TOPOLOGY, "rb") as src:
        return tomllib.load(src)


def env_name(prefix, key):
    return prefix + key.upper().replace(".", "__")


def expand(template, service_urls, replica_urls):
    """Fills {svc} and {svc*} in a wiring template."""

    def fill(match):
        name, many = match.group(1), match.group(2)
        if many:
            urls = replica_urls.get(name) or [service_urls[name]]
            return json.dumps(urls)
        return service_urls.get(name) or replica_urls[name][0]

    return re.sub(r"\{([a-z]+)(\*?)\}", fill, template)


def wiring_env(topology, service, service_urls, replica_urls):
    prefix = topology["services"][service]["env_prefix"]
    return {
        env_name(prefix, key): expand(template, service_urls, replica_urls)
        for key, template in topology["wiring"].get(service, {}).items()
    }


# --------------------------------------------------------------------------
# env


def command_env(args):
    service, rest = args[0], args[1:]
    service_urls, replica_urls = {}, {}
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        name, _, urls = value.partition("=")
        if flag == "--url":
            service_urls[name] = urls
        elif flag == "--replicas":
            replica_urls[name] = urls.split(",")
        else:
            sys.exit(f"unknown flag {flag}")
    for name, value in wiring_env(load(), service, service_urls, replica_urls).items():
        print(f"{name}={value}")


# --------------------------------------------------------------------------
# check


class Problems(list):
    def expect(self, where, what, actual, wanted):
        if actual != wanted:
            self.append(f"{where}: {what} is {actual!r}, the topology says {wanted!r}")


def container_addresses(topology, per_replica):
    """Service URLs and replica URLs as containers see them: the service name
    for all replicas, `<name>-<i>` for each (compose), or only the name."""
    service_urls, replica_urls = {}, {}
    for name, spec in topology["services"].items():
        port = spec["api_port"]
        service_urls[name] = f"http://{name}:{port}"
        if per_replica and spec["replicas"] > 1:
            replica_urls[name] = [f"http://{name}-{i}:{port}" for i in range(1, spec["replicas"] + 1)]
    return service_urls, replica_urls


def check_config(bin_dir, binary, env, where, problems, topology_spec, tmp):
    """Runs `<binary> check-config` with exactly `env`; returns nothing,
    records a problem when the service refuses it or binds other ports."""
    result = subprocess.run([str(Path(bin_dir).resolve() / binary), "check-config"], env=env,
                            capture_output=True, text=True, timeout=30, cwd=tmp)
    if result.returncode != 0:
        problems.append(f"{where}: {binary} refuses its configuration: {result.stderr.strip()}")
        return
    report = json.loads(result.stdout)
    for listener, port_key in (("api", "api_port"), ("admin", "admin_port")):
        port = int(report["listen"][listener].rsplit(":", 1)[1])
        problems.expect(where, f"the {listener} port the service binds", port, topology_spec[port_key])


def image_env(dockerfile_text, target):
    """The ENV a Dockerfile target sets (our Dockerfile's simple form)."""
    block = re.search(rf"^FROM \S+ AS {target}\n(.*?)(?=^FROM |\Z)", dockerfile_text, re.S | re.M)
    env = {}
    if block:
        for statement in re.findall(r"^ENV (.*?)(?<!\\)\n", block.group(1), re.S | re.M):
            for pair in statement.replace("\\\n", " ").split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def check_wiring(topology, service, env, service_urls, replica_urls, where, problems):
    """The wiring keys `service` gets in `env`. In containers an upstream
    whose template lists every replica ({x*}) may instead find them by DNS:
    `endpoints = []` and `dns.name` = the service's name on its API port."""
    prefix = topology["services"][service]["env_prefix"]
    for key, template in topology["wiring"].get(service, {}).items():
        var = env_name(prefix, key)
        wanted = expand(template, service_urls, replica_urls)
        actual = env.get(var)
        many = re.fullmatch(r"\{([a-z]+)\*\}", template)
        if many and key.endswith(".endpoints"):
            target = many.group(1)
            dns = env_name(prefix, key.removesuffix(".endpoints") + ".dns")
            if env.get(dns + "__NAME") is not None:
                problems.expect(where, var, actual and json.loads(actual), [])
                problems.expect(where, dns + "__NAME", env.get(dns + "__NAME"), target)
                problems.expect(where, dns + "__PORT", env.get(dns + "__PORT"),
                                str(topology["services"][target]["api_port"]))
                continue
        if var.endswith("__ENDPOINTS") and actual is not None:
            actual = json.dumps(json.loads(actual))
        problems.expect(where, var, actual, wanted)


PLACEHOLDER_SECRETS = {
    "DATABASE__URL": "postgres://portico:placeholder@db:5432/portico",
    "SIGNING_KEYS__ENCRYPTION_KEY": "cGxhY2Vob2xkZXIga2V5IGZvciBjaGVja3MgMzJieXQ=",
    "REDIS__URL": "redis://redis:6379",
    "EVENTS__SUBSCRIBERS": '[{name = "auth", url = "http://auth:8082/internal/events", '
    'secret = "whsec_cGxhY2Vob2xkZXIgd2ViaG9vayBzZWNyZXQh", types = ["user.deleted"]}]',
    "EVENTS__SECRETS": '["whsec_cGxhY2Vob2xkZXIgd2ViaG9vayBzZWNyZXQh"]',
}


def placeholder_secret(var):
    """A well-formed value for a secret an overlay does not render (made
    outside git), so the service's config can still be checked."""
    base = var.removesuffix("_FILE")
    for suffix, value in PLACEHOLDER_SECRETS.items():
        if base.endswith(suffix):
            return value
    return "placeholder"


def check_agreement(topology, per_service_env, where, problems):
    for key in topology["agree"]["keys"]:
        values = {}
        for name, env in per_service_env.items():
            var = env_name(topology["services"][name]["env_prefix"], key)
            values[name] = env.get(var)
        if len(set(values.values())) > 1:
            problems.append(f"{where}: `{key}` differs between services: {values}")


def check_compose(topology, compose, bin_dir, problems, tmp):
    services = compose["services"]
    service_urls, replica_urls = container_addresses(topology, per_replica=True)
    dockerfile = (ROOT / "Dockerfile").read_text()
    per_service_env = {}
    for name, spec in topology["services"].items():
        names = [name] if spec["replicas"] == 1 else [f"{name}-{i}" for i in range(1, spec["replicas"] + 1)]
        if spec["replicas"] > 1 and name in services:
            problems.append(f"compose: `{name}` should be {spec['replicas']} services {names}")
        baked = image_env(dockerfile, name)
        if not baked:
            problems.append(f"Dockerfile: no target `{name}` with ENV")
        for listener, port_key in (("API", "api_port"), ("ADMIN", "admin_port")):
            var = f"{spec['env_prefix']}LISTEN__{listener}"
            problems.expect(f"Dockerfile target {name}", var, baked.get(var), f"0.0.0.0:{spec[port_key]}")
        exposed = re.search(rf"^FROM \S+ AS {name}\n.*?^EXPOSE ([0-9 ]+)$", dockerfile, re.S | re.M)
        problems.expect(f"Dockerfile target {name}", "EXPOSE",
                        exposed and exposed.group(1).split(), [str(spec["api_port"]), str(spec["admin_port"])])
        for container in names:
            where = f"compose service {container}"
            if container not in services:
                problems.append(f"{where}: missing")
                continue
            defined = services[container]
            env = {k: v for k, v in (defined.get("environment") or {}).items() if v not in (None, "")}
            check_wiring(topology, name, env, service_urls, replica_urls, where, problems)
            problems.expect(where, "build target", (defined.get("build") or {}).get("target"), name)
            aliases = ((defined.get("networks") or {}).get("backend") or {}).get("aliases") or []
            if spec["replicas"] > 1 and name not in aliases:
                problems.append(f"{where}: not reachable as `{name}` (backend network alias)")
            per_service_env[name] = env
            check_config(bin_dir, spec["binary"], {**baked, **env}, where, problems, spec, tmp)
    published = [p for p in services.get("gateway", {}).get("ports", [])]
    problems.expect("compose service gateway", "published container port",
                    [int(p["target"]) for p in published], [topology["services"]["gateway"]["api_port"]])
    for name, defined in services.items():
        if name != "gateway" and defined.get("ports") and not defined.get("profiles"):
            problems.append(f"compose service {name}: publishes ports; only the gateway may")
    check_agreement(topology, per_service_env, "compose", problems)


def k8s_env(container, objects):
    """The environment a container gets: envFrom ConfigMaps, env values and
    configMapKeyRefs (`_FILE` values as written; see secret_files)."""
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    env = {}
    for source in container.get("envFrom", []):
        env.update(config_maps.get(source.get("configMapRef", {}).get("name"), {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = config_maps.get(ref["name"], {}).get(ref["key"])
    return env


def secret_files(deployment, container, objects, secret_dir):
    """Writes each mounted Secret's data under secret_dir; returns a map from
    the path in the pod to the local copy."""
    import base64

    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
    mapping = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        secret_name = volume.get("secret", {}).get("secretName")
        if not secret_name or secret_name not in secrets:
            continue
        secret = secrets[secret_name]
        data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        data.update(secret.get("stringData", {}))
        for key, value in data.items():
            local = Path(secret_dir) / secret_name / key
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(value)
            mapping[f"{mount['mountPath'].rstrip('/')}/{key}"] = str(local)
    return mapping


def config_map_files(deployment, container, objects, local_dir):
    """Writes each mounted ConfigMap's data under local_dir; returns a map
    from the path in the pod to the local copy."""
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
    mapping = {}
    for mount in container.get("volumeMounts", []):
        name = volumes.get(mount["name"], {}).get("configMap", {}).get("name")
        if name not in config_maps:
            continue
        for key, value in config_maps[name].get("data", {}).items():
            local = Path(local_dir) / "configmaps" / name / key
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(value)
            mapping[f"{mount['mountPath'].rstrip('/')}/{key}"] = str(local)
    return mapping


def flatten_toml(prefix, document, path=()):
    """A config file's keys as the environment variables that would set
    them (`upstreams.user.dns.name` → PREFIX + UPSTREAMS__USER__DNS__NAME),
    so the wiring checks read a file and an environment alike."""
    env = {}
    for key, value in document.items():
        here = (*path, key)
        if isinstance(value, dict):
            env.update(flatten_toml(prefix, value, here))
        else:
            name = prefix + "__".join(part.upper() for part in here)
            if isinstance(value, bool):
                env[name] = "true" if value else "false"
            elif isinstance(value, list):
                env[name] = json.dumps(value)
            else:
                env[name] = str(value)
    return env


def canary_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("canary", ROOT / "scripts" / "ci" / "canary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_canary_splits(binary, runnable, config_file_var, traffic_text, where, problems, spec, bin_dir, tmp):
    """Every upstream of the traffic file split the way a canary release
    splits it (scripts/ci/canary.py) must be a config the gateway accepts."""
    import tomllib

    canary = canary_module()
    for upstream in tomllib.loads(traffic_text).get("upstreams", {}):
        try:
            text = canary.split_text(traffic_text, upstream, 5)
        except canary.Usage as err:
            problems.append(f"{where}: a canary of upstream {upstream} cannot be split: {err}")
            continue
        split_file = Path(tmp) / f"canary-{upstream}.toml"
        split_file.write_text(text)
        check_config(bin_dir, binary, {**runnable, config_file_var: str(split_file)},
                     f"{where} (canary split of {upstream})", problems, spec, tmp)


def check_k8s(topology, overlay, objects, bin_dir, problems, tmp):
    service_urls, replica_urls = container_addresses(topology, per_replica=False)
    by_kind_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    per_service_env = {}
    renders_secrets = any(o["kind"] == "Secret" for o in objects)
    for name, spec in topology["services"].items():
        where = f"k8s {overlay} Deployment {name}"
        deployment = by_kind_name.get(("Deployment", name))
        if deployment is None:
            problems.append(f"{where}: missing")
            continue
        pod = deployment["spec"]["template"]
        container = next((c for c in pod["spec"]["containers"] if c["name"] == name),
                         pod["spec"]["containers"][0])
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        problems.expect(where, "containerPort api", ports.get("api"), spec["api_port"])
        problems.expect(where, "containerPort admin", ports.get("admin"), spec["admin_port"])
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                            ("readinessProbe", "/readyz")):
            get = container.get(probe, {}).get("httpGet", {})
            problems.expect(where, f"{probe} port", get.get("port"), "admin")
            problems.expect(where, f"{probe} path", get.get("path"), path)
        annotations = pod["metadata"].get("annotations", {})
        problems.expect(where, "prometheus.io/port", annotations.get("prometheus.io/port"), str(spec["admin_port"]))
        service = by_kind_name.get(("Service", name))
        if service is None:
            problems.append(f"k8s {overlay} Service {name}: missing")
        else:
            targets = [p.get("targetPort") for p in service["spec"]["ports"]]
            if not set(targets) <= {"api", spec["api_port"]}:
                problems.append(f"k8s {overlay} Service {name}: targets {targets}, not the api port")
            if spec["replicas"] > 1 and service["spec"].get("clusterIP") != "None":
                problems.append(f"k8s {overlay} Service {name}: must be headless (the gateway finds replicas by DNS)")
        container_env = k8s_env(container, objects)
        env = container_env
        mounted = config_map_files(deployment, container, objects, Path(tmp) / overlay / name)
        config_file_var = f"{spec['env_prefix']}CONFIG_FILE"
        traffic_text = None
        if config_file_var in env:
            local = mounted.get(env[config_file_var])
            if local is None:
                problems.append(f"{where}: {config_file_var} names {env[config_file_var]}, "
                                "which no mounted ConfigMap key provides")
            else:
                import tomllib

                traffic_text = Path(local).read_text()
                # The environment overrides the file, as in the service.
                env = {**flatten_toml(spec["env_prefix"], tomllib.loads(traffic_text)), **env}
        check_wiring(topology, name, env, service_urls, replica_urls, where, problems)
        per_service_env[name] = env
        files = {**secret_files(deployment, container, objects, Path(tmp) / overlay), **mounted}
        runnable = {}
        # What the container is given: its environment, the file mounted.
        for var, value in container_env.items():
            if var == config_file_var and value in files:
                runnable[var] = files[value]
                continue
            if var.endswith("_FILE"):
                if value in files:
                    value = files[value]
                elif renders_secrets:
                    problems.append(f"{where}: {var} names {value}, which no mounted Secret key provides")
                    continue
                else:
                    # Secrets made outside git (prod): a well-formed stand-in.
                    stand_in = Path(tmp) / overlay / "stand-in" / var
                    stand_in.parent.mkdir(parents=True, exist_ok=True)
                    stand_in.write_text(placeholder_secret(var))
                    value = str(stand_in)
            runnable[var] = value
        check_config(bin_dir, spec["binary"], runnable, where, problems, spec, tmp)
        if traffic_text is not None:
            check_canary_splits(spec["binary"], runnable, config_file_var, traffic_text, where, problems,
                                spec, bin_dir, Path(tmp) / overlay / name)
    check_agreement(topology, per_service_env, f"k8s {overlay}", problems)


def command_check(args):
    compose_json, k8s_dir, bin_dir = args
    topology = load()
    problems = Problems()
    with tempfile.TemporaryDirectory() as tmp:
        with open(compose_json, encoding="utf-8") as src:
            check_compose(topology, json.load(src), bin_dir, problems, tmp)
        for rendered in sorted(Path(k8s_dir).glob("*.json")):
            objects = json.loads(rendered.read_text())
            check_k8s(topology, rendered.stem, objects, bin_dir, problems, tmp)
    if problems:
        print("topology: the deployment files disagree with deploy/topology.toml or the services:")
        for problem in problems:
            print(f"  - {problem}")
        sys.exit(1)
    print("topology: compose, Dockerfile and k8s overlays agree with deploy/topology.toml; "
          "every service accepts its configuration")


if __name__ == "__main__":
    commands = {"env": command_env, "check": command_check}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    commands[sys.argv[1]](sys.argv[2:])
