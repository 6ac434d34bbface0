#!/usr/bin/env python3
"""A canary release of one upstream service (user or auth) through the
gateway's traffic split: step the canary's share up, judge each step by its
error ratio as the gateways measured it, and roll back at the first bad
step. Standard library only.

  canary.py run      --service S --steps 5,25,50,100 --interval SECONDS
                     --max-error-ratio R --min-requests N
                     (--traffic-file PATH | --configmap NAME [--namespace NS])
                     (--metrics-url URL [--metrics-url URL…] | --prometheus URL)
                     [--canary-endpoints URL,…] [--settle-timeout SECONDS]
  canary.py restore  (--traffic-file PATH | --configmap NAME [--namespace NS])
                     [--metrics-url URL… | --prometheus URL] [--settle-timeout SECONDS]
  canary.py split    FILE SERVICE WEIGHT [--canary-endpoints URL,…]
  canary.py manifests SERVICE IMAGE [--replicas N]  < rendered.json > canary.json

The traffic file is the gateway's config file (in Kubernetes the ConfigMap
`gateway-traffic`, mounted and reloaded live). Its `[upstreams.S]` section
becomes `S-stable` (the section as written) and `S-canary` (the same, with
DNS name `S-canary`, the canary's headless Service, or the given endpoints),
and `upstreams.S` a split between them, sticky per user.

`run` saves the file as it was, then for each step writes the split, waits
until every gateway reports the new weight (`gateway_split_weight`), and
watches the canary group for at least --interval seconds and --min-requests
requests: its error ratio is the share of 5xx among the answers its clients
got (`gateway_upstream_responses_total{upstream="S-canary"}`, the gateway's
own 502/503/504 included). Above --max-error-ratio, or too little traffic to
judge within four intervals, it restores the saved file and exits 1. After
the last step it exits 0 and leaves traffic where the last step put it:
the caller promotes (rolls the stable Deployment to the new image) and then
runs `restore`, which writes the saved file back.

Exit codes: 0 promoted (run) / restored (restore), 1 rolled back, 2 usage or
setup error (nothing changed).
"""

import argparse
import base64
import copy
import json
import os
import re
import subprocess
import sys
import time
import tomllib
import urllib.parse
import urllib.request

SAVED_ANNOTATION = "portico.dev/canary-original"
SERVICE_ANNOTATION = "portico.dev/canary"
TRACK_LABEL = "portico.dev/track"
TRAFFIC_KEY = "traffic.toml"

# What clients got through an upstream group, by status class (labels
# upstream, class): the replicas' answers and the gateway's own 502/503/504
# when the group could not answer (a dead canary is ejected and then
# answers nothing, which its clients still see).
RESPONSES = "gateway_upstream_responses_total"
WEIGHT = "gateway_split_weight"


class Usage(Exception):
    """Bad arguments or a setup that cannot work: nothing was changed."""


# --- TOML out (the subset a gateway config file uses) -----------------------

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key):
    return key if BARE_KEY.fullmatch(key) else json.dumps(key)


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise Usage(f"cannot write a {type(value).__name__} value back as TOML")


def is_table_array(value):
    return isinstance(value, list) and value and all(isinstance(v, dict) for v in value)


def toml_dump(document):
    lines = []

    def table(body, path):
        for key, value in body.items():
            if not isinstance(value, dict) and not is_table_array(value):
                lines.append(f"{toml_key(key)} = {toml_value(value)}")
        for key, value in body.items():
            here = path + [toml_key(key)]
            if isinstance(value, dict):
                # A table holding only tables needs no header of its own.
                if not value or any(not isinstance(v, dict) and not is_table_array(v)
                                    for v in value.values()):
                    lines.append("")
                    lines.append(f"[{'.'.join(here)}]")
                table(value, here)
            elif is_table_array(value):
                for item in value:
                    lines.append("")
                    lines.append(f"[[{'.'.join(here)}]]")
                    table(item, here)

    table(document, [])
    return "\n".join(lines).lstrip("\n") + "\n"


# --- The split ---------------------------------------------------------------

def split_text(original, service, weight, canary_endpoints=None):
    """The traffic file with `service` split `100 - weight` / `weight`
    between its stable and canary groups."""
    if not 0 <= weight <= 100:
        raise Usage(f"a weight is a percentage, not {weight}")
    document = tomllib.loads(original)
    section = document.get("upstreams", {}).get(service)
    if section is None:
        raise Usage(f"the traffic file has no [upstreams.{service}] to split")
    if section.get("split"):
        raise Usage(f"upstreams.{service} is a split already (a canary in progress?)")
    stable, canary = f"{service}-stable", f"{service}-canary"
    for taken in (stable, canary):
        if taken in document["upstreams"]:
            raise Usage(f"the traffic file already has an upstream named {taken}")
    canary_section = copy.deepcopy(section)
    if canary_endpoints:
        canary_section["endpoints"] = list(canary_endpoints)
        canary_section.pop("dns", None)
    elif section.get("dns", {}).get("name"):
        canary_section["dns"]["name"] = f"{section['dns']['name']}-canary"
    else:
        raise Usage(f"upstreams.{service} lists endpoints: say where the canary is (--canary-endpoints)")
    document["upstreams"][stable] = section
    document["upstreams"][canary] = canary_section
    document["upstreams"][service] = {"endpoints": [], "split": {stable: 100 - weight, canary: weight}}
    return (f"# Canary of {service} in progress: {weight}% to {canary}. Written by scripts/ci/canary.py;\n"
            f"# `canary.py restore` puts the file back as it was.\n" + toml_dump(document))


# --- Where the traffic file lives ----------------------------------------------

class FileStore:
    """A local gateway config file (tests, a gateway outside Kubernetes).
    The saved original sits beside it."""

    def __init__(self, path):
        self.path = path
        self.saved_path = path + ".before-canary"

    def read(self):
        with open(self.path, encoding="utf-8") as src:
            return src.read()

    def write(self, text):
        # Replaced in one step: the gateway never reads half a file.
        partial = self.path + ".partial"
        with open(partial, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(partial, self.path)

    def saved(self):
        try:
            with open(self.saved_path, encoding="utf-8") as src:
                return src.read()
        except FileNotFoundError:
            return None

    def begin(self, original, service):
        del service
        with open(self.saved_path, "w", encoding="utf-8") as out:
            out.write(original)

    def finish(self):
        original = self.saved()
        if original is None:
            raise Usage(f"no canary in progress ({self.saved_path} does not exist)")
        self.write(original)
        os.remove(self.saved_path)


class ConfigMapStore:
    """The gateway's traffic ConfigMap. The original text and the service
    under canary are kept in its annotations (scripts/ci/deploy.sh refuses
    to overwrite the ConfigMap while they are there)."""

    def __init__(self, name, namespace):
        self.name = name
        self.namespace = namespace

    def kubectl(self, *args):
        command = [os.environ.get("KUBECTL", "kubectl"), *args, "configmap", self.name]
        if self.namespace:
            command += ["--namespace", self.namespace]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise Usage(f"kubectl {' '.join(args)} configmap {self.name}: {result.stderr.strip()}")
        return result.stdout

    def get(self):
        return json.loads(self.kubectl("get", "--output", "json"))

    def patch(self, body):
        self.kubectl("patch", "--type", "merge", "--patch", json.dumps(body))

    def read(self):
        data = self.get().get("data", {})
        if TRAFFIC_KEY not in data:
            raise Usage(f"configmap {self.name} has no {TRAFFIC_KEY}")
        return data[TRAFFIC_KEY]

    def write(self, text):
        self.patch({"data": {TRAFFIC_KEY: text}})

    def saved(self):
        annotations = self.get()["metadata"].get("annotations") or {}
        encoded = annotations.get(SAVED_ANNOTATION)
        return None if encoded is None else base64.b64decode(encoded).decode()

    def begin(self, original, service):
        self.patch({"metadata": {"annotations": {
            SAVED_ANNOTATION: base64.b64encode(original.encode()).decode(),
            SERVICE_ANNOTATION: service,
        }}})

    def finish(self):
        original = self.saved()
        if original is None:
            raise Usage(f"no canary in progress (configmap {self.name} has no {SAVED_ANNOTATION})")
        self.patch({"data": {TRAFFIC_KEY: original},
                    "metadata": {"annotations": {SAVED_ANNOTATION: None, SERVICE_ANNOTATION: None}}})


# --- What the gateways measured -------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def http_get(url, timeout=10):
    request = urllib.request.Request(url)
    token = os.environ.get("PROMETHEUS_BEARER_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode()


class Scraped:
    """Each gateway's admin /metrics, read directly (one URL per gateway)."""

    def __init__(self, urls):
        self.urls = urls

    def samples(self):
        """One list of (name, labels, value) per gateway."""
        per_gateway = []
        for url in self.urls:
            parsed = []
            for line in http_get(url).splitlines():
                match = SAMPLE.match(line)
                if match and not line.startswith("#"):
                    labels = dict(LABEL.findall(match.group(2) or ""))
                    parsed.append((match.group(1), labels, float(match.group(3))))
            per_gateway.append(parsed)
        return per_gateway

    def weights(self, split, group):
        """The weight each gateway runs `group` of `split` with (None when
        it has never run that split)."""
        result = []
        for samples in self.samples():
            found = [v for n, labels, v in samples
                     if n == WEIGHT and labels.get("upstream") == split and labels.get("group") == group]
            result.append(found[0] if found else None)
        return result

    def start_window(self, group):
        return self.totals(group)

    def window(self, group, start):
        now = self.totals(group)
        return {class_: now[class_] - start.get(class_, 0.0) for class_ in now}

    def totals(self, group):
        """Responses by class, summed over the gateways."""
        totals = {}
        for samples in self.samples():
            for name, labels, value in samples:
                if name == RESPONSES and labels.get("upstream") == group:
                    totals[labels["class"]] = totals.get(labels["class"], 0.0) + value
        return totals


class Prometheus:
    """The gateways as the cluster's Prometheus scrapes them."""

    def __init__(self, url):
        self.url = url.rstrip("/")

    def query(self, promql):
        """An instant query: (labels, value) per series."""
        answer = json.loads(http_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
        if answer.get("status") != "success":
            raise Usage(f"prometheus: {answer}")
        return [(item["metric"], float(item["value"][1])) for item in answer["data"]["result"]]

    def weights(self, split, group):
        values = [value for _, value in self.query(f'{WEIGHT}{{upstream="{split}",group="{group}"}}')]
        # No series at all: no gateway has run the split yet.
        return values or [None]

    def start_window(self, group):
        del group
        return time.time()

    def window(self, group, start):
        seconds = max(1, round(time.time() - start))
        series = self.query(f'sum by (class) (increase({RESPONSES}{{upstream="{group}"}}[{seconds}s]))')
        return {labels.get("class"): value for labels, value in series}


# --- The rollout ----------------------------------------------------------------

def wait_for_weight(metrics, split, group, weight, timeout):
    """Until every gateway runs `group` at `weight` (a reload takes up to a
    minute to reach a pod in Kubernetes: the kubelet syncs mounted
    ConfigMaps periodically)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = metrics.weights(split, group)
        if all(w is not None and w == weight for w in seen) or (
                weight == 0 and all(w in (None, 0) for w in seen)):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"after {timeout}s the gateways run {group} at {seen}, not {weight}")
        time.sleep(1)


def error_ratio(window):
    """(requests, 5xx, ratio) of a window's responses by class."""
    requests = sum(window.values())
    failed = window.get("5xx", 0.0)
    return requests, failed, (failed / requests if requests else 0.0)


def judge(metrics, group, interval, min_requests, max_error_ratio):
    """Watches `group` for at least `interval` seconds and `min_requests`
    requests (at most four intervals): (passed, requests, 5xx, why)."""
    start = metrics.start_window(group)
    began = time.monotonic()
    while True:
        time.sleep(min(1.0, interval))
        requests, failed, ratio = error_ratio(metrics.window(group, start))
        elapsed = time.monotonic() - began
        if requests >= min_requests and ratio > max_error_ratio:
            return False, requests, failed, "error ratio above the limit"
        if elapsed >= interval and requests >= min_requests:
            return True, requests, failed, "healthy"
        if elapsed >= 4 * interval:
            return False, requests, failed, f"fewer than {min_requests} requests reached it: cannot judge"


def log(message):
    print(f"canary: {message}", flush=True)


def command_run(args, store, metrics):
    if store.saved() is not None:
        raise Usage("a canary is in progress already (`canary.py restore` ends it)")
    steps = [int(step) for step in args.steps.split(",")]
    if not steps or steps != sorted(steps) or not all(0 < s <= 100 for s in steps):
        raise Usage(f"--steps must rise within 1..100, not {args.steps}")
    original = store.read()
    endpoints = args.canary_endpoints.split(",") if args.canary_endpoints else None
    # Every step's file is made before the first is written: an upstream
    # that cannot be split fails here, with nothing changed.
    texts = [split_text(original, args.service, step, endpoints) for step in steps]
    store.begin(original, args.service)
    group = f"{args.service}-canary"
    try:
        for step, text in zip(steps, texts):
            store.write(text)
            wait_for_weight(metrics, args.service, group, step, args.settle_timeout)
            passed, requests, failed, why = judge(metrics, group, args.interval, args.min_requests,
                                                  args.max_error_ratio)
            log(f"{step:>3}% to {group}: {int(failed)} failed of {int(requests)} requests: {why}")
            if not passed:
                raise RuntimeError(f"{group} failed at {step}%: {why}")
    except (Exception, KeyboardInterrupt) as failure:  # whatever stopped it, undo the split
        log(f"rolling back: {failure or type(failure).__name__}")
        store.finish()
        try:
            wait_for_weight(metrics, args.service, group, 0, args.settle_timeout)
            log(f"every gateway sends {args.service} to its stable group again")
        except TimeoutError as err:
            log(f"restored the traffic file, but {err}")
        return 1
    log(f"{group} passed every step; traffic stays at {steps[-1]}% until `canary.py restore`")
    return 0


def command_restore(args, store, metrics):
    store.finish()
    if metrics is not None:
        wait_for_weight(metrics, args.service, f"{args.service}-canary", 0, args.settle_timeout)
    log("traffic file restored")
    return 0


def command_split(args):
    with open(args.file, encoding="utf-8") as src:
        original = src.read()
    endpoints = args.canary_endpoints.split(",") if args.canary_endpoints else None
    sys.stdout.write(split_text(original, args.service, args.weight, endpoints))
    return 0


def command_manifests(args):
    """The canary's Deployment and headless Service: the service's own from
    the rendered overlay (JSON list on stdin), renamed `S-canary`, labelled
    track=canary (the stable Service selects track=stable), the image
    pinned, --replicas replicas."""
    objects = json.load(sys.stdin)
    if isinstance(objects, dict):
        objects = objects.get("items", [])
    found = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    canary = f"{args.service}-canary"
    out = []
    for kind in ("Deployment", "Service"):
        source = found.get((kind, args.service))
        if source is None:
            raise Usage(f"the rendered overlay has no {kind} {args.service}")
        made = copy.deepcopy(source)
        made["metadata"]["name"] = canary
        made["metadata"].setdefault("labels", {})[TRACK_LABEL] = "canary"
        made.pop("status", None)
        if kind == "Deployment":
            spec = made["spec"]
            spec["replicas"] = args.replicas
            spec["selector"]["matchLabels"][TRACK_LABEL] = "canary"
            spec["template"]["metadata"]["labels"][TRACK_LABEL] = "canary"
            pod = spec["template"]["spec"]
            main = next((c for c in pod["containers"] if c["name"] == args.service), None)
            if main is None:
                raise Usage(f"Deployment {args.service} has no container {args.service}")
            # The service and whatever runs its image (the migrations' init
            # container: the new version's migrations run before it starts).
            released = main["image"]
            for container in pod["containers"] + pod.get("initContainers", []):
                if container["image"] == released:
                    container["image"] = args.image
        else:
            made["spec"]["selector"][TRACK_LABEL] = "canary"
        out.append(made)
    json.dump({"apiVersion": "v1", "kind": "List", "items": out}, sys.stdout, indent=2)
    print()
    return 0


def stop_on_sigterm():
    """A cancelled CI job sends SIGTERM: end like Ctrl-C, so a run under
    way rolls back rather than leaving the split behind."""
    import signal

    def interrupt(signum, frame):
        del signum, frame
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main():
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def where(sub):
        sub.add_argument("--traffic-file")
        sub.add_argument("--configmap")
        sub.add_argument("--namespace")
        sub.add_argument("--metrics-url", action="append", default=[])
        sub.add_argument("--prometheus")
        sub.add_argument("--settle-timeout", type=float, default=180)

    run = commands.add_parser("run")
    where(run)
    run.add_argument("--service", required=True)
    run.add_argument("--steps", default="5,25,50,100")
    run.add_argument("--interval", type=float, default=120)
    run.add_argument("--max-error-ratio", type=float, default=0.01)
    run.add_argument("--min-requests", type=int, default=100)
    run.add_argument("--canary-endpoints")
    restore = commands.add_parser("restore")
    where(restore)
    restore.add_argument("--service", required=True)
    split = commands.add_parser("split")
    split.add_argument("file")
    split.add_argument("service")
    split.add_argument("weight", type=int)
    split.add_argument("--canary-endpoints")
    manifests = commands.add_parser("manifests")
    manifests.add_argument("service")
    manifests.add_argument("image")
    manifests.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()

    try:
        if args.command == "split":
            return command_split(args)
        if args.command == "manifests":
            return command_manifests(args)
        if bool(args.traffic_file) == bool(args.configmap):
            raise Usage("say where the traffic file is: --traffic-file or --configmap")
        store = FileStore(args.traffic_file) if args.traffic_file else ConfigMapStore(args.configmap, args.namespace)
        if args.prometheus:
            metrics = Prometheus(args.prometheus)
        elif args.metrics_url:
            metrics = Scraped(args.metrics_url)
        else:
            metrics = None
        if args.command == "run":
            if metrics is None:
                raise Usage("say where the gateways' metrics are: --metrics-url or --prometheus")
            return command_run(args, store, metrics)
        return command_restore(args, store, metrics)
    except (Usage, tomllib.TOMLDecodeError) as err:
        print(f"canary: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
