"""Every Redis connection the gateway opens (keys, limits, ledger, caches), from one
``REDIS_URL``, on one library: redis-py's asyncio client, hiredis parsing its replies.

One URL means one behaviour everywhere: ``redis://``, ``rediss://`` (its TLS query options,
``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_check_hostname``, ... as redis-py reads them) and
``unix://`` go to ``Redis.from_url``; ``redis+sentinel://`` (``rediss+sentinel://`` for TLS to
the master) asks the Sentinels for the master of a named service and follows its failovers:

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?options]

The password is the master's; ``sentinel_password`` in the query is the Sentinels' own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379


def open_redis(url: str, timeout_s: float, **options: Any) -> Redis:
    """A client for ``url`` whose every call gives up after ``timeout_s`` (no retry on timeout:
    each caller decides what a slow Redis means)."""
    options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
               "retry_on_timeout": False, **options}
    if urlsplit(url).scheme.lower() in SENTINEL_SCHEMES:
        return _sentinel_master(url, options)
    return Redis.from_url(url, **options)


def _sentinel_master(url: str, options: dict[str, Any]) -> Redis:
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = []
    for host in filter(None, hosts.split(",")):
        where = urlsplit(f"//{host}")
        if where.hostname:
            sentinels.append((where.hostname, where.port or SENTINEL_PORT))
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path or len(path) > 2:
        raise ValueError("a Sentinel URL names its Sentinels and a service: "
                         "redis+sentinel://host:26379,host:26379/service[/db]")
    sentinel_options: dict[str, Any] = {"socket_timeout": options["socket_timeout"],
                                        "socket_connect_timeout": options["socket_connect_timeout"]}
    master = dict(options)
    if len(path) == 2:
        master["db"] = int(path[1])
    if username:
        master["username"] = unquote(username)
    if password:
        master["password"] = unquote(password)
    for name, value in parse_qsl(parts.query):
        if name == "sentinel_password":
            sentinel_options["password"] = value
        else:
            parser = URL_QUERY_ARGUMENT_PARSERS.get(name)
            master[name] = parser(value) if parser else value
    if parts.scheme.lower() == "rediss+sentinel":
        master["ssl"] = True
    sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_options)
    return sentinel.master_for(path[0], redis_class=Redis, **master)
