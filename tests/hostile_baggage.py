"""Hostile baggage headers, shared by the core fuzz suite and the HTTP one.

Every header built here holds identity keys only as look-alikes (``%75ser.id``, ``user.id%20``,
...) or with a value that must be refused (control characters, bad escapes, invalid UTF-8),
so a hop that reads identity from any of them has a defect. The rest is noise a parser must
survive in linear time: runs of OWS, ``;`` and ``=``, properties, empty members, non-ASCII.
"""

from __future__ import annotations

import random

from hypothesis import strategies as st

IDENTITY_KEYS = ("user.id", "tenant.id", "session.id", "user.roles", "identity.sig")

LOOK_ALIKE_KEYS = (
    "%75ser.id",
    "user.id%20",
    "user%2Eid",
    "%74enant.id",
    "tenant.id%00",
    "USER.ID",
    "User.Id",
    "user.id+",
    "+user.id",
    "user.id.",
    "user_id",
    "us\u0435r.id",
    "user .id",
    "user.id\x00",
    "\x00tenant.id",
    "tenant\tid",
    "user.roles%3B",
    "identity.sig%2C",
    "user.id\x1b",
    "session.i%64",
)
REFUSED_VALUES = (
    "acme%0D",
    "acme%0A",
    "%00evil",
    "a%1B[31mred",
    "%7F",
    "%C2%85",
    "%C2%9B2J",
    "a\x00b",
    "a\x1bb",
    "a\x7fb",
    "%ZZ",
    "%4",
    "%",
    "%C3%28",
    "%FF%FE",
    "%ED%A0%80",
    "a b",
    '"quoted"',
    "\u00e9",
    "back\\slash",
)
NOISE = (
    " " * 300,
    "\t" * 300,
    ";" * 200,
    "=" * 200,
    ";x=1",
    ";flag",
    " ; p = 1 ",
    "",
    "%20" * 50,
    "\u20ac" * 40,
    "\x00\x1b\x7f",
    "%0D%0A",
)
CLEAN_VALUES = ("mallory", "admin", "acme", "u-1", "%6Dallory", "a+b", "")


def _clean(text: str) -> str:
    # CR and LF would end an HTTP header line: on the wire they can only arrive escaped.
    return text.replace("\r", "%0D").replace("\n", "%0A")


look_alike_member = st.builds(
    lambda key, ows, value, prop: f"{ows}{key}{ows}={ows}{value}{prop}",
    st.sampled_from(LOOK_ALIKE_KEYS),
    st.sampled_from(("", " ", "\t", " \t ")),
    st.sampled_from(CLEAN_VALUES + REFUSED_VALUES),
    st.sampled_from(NOISE),
)
refused_identity_member = st.builds(
    lambda key, value, prop: f"{key}={value}{prop}",
    st.sampled_from(IDENTITY_KEYS),
    st.sampled_from(REFUSED_VALUES),
    st.sampled_from(NOISE),
)
noise_member = st.one_of(
    st.sampled_from(NOISE),
    # arbitrary octets, as a server decodes them (latin-1); cheaper to draw than st.text
    st.binary(max_size=24).map(lambda b: b.decode("latin-1").replace("user.", "usr.")),
    st.builds(lambda i, n: f"k{i}={n}", st.integers(0, 99), st.sampled_from(NOISE)),
)
hostile_headers = st.lists(
    st.one_of(look_alike_member, refused_identity_member, noise_member), min_size=1, max_size=12
).map(lambda members: _clean(",".join(members)))


def random_hostile_header(rng: random.Random) -> str:
    """The same kinds of header, drawn fast (for floods of tens of thousands)."""
    members = []
    for _ in range(rng.randint(1, 30)):
        kind = rng.random()
        if kind < 0.4:
            key = rng.choice(LOOK_ALIKE_KEYS)
            value = rng.choice(CLEAN_VALUES + REFUSED_VALUES)
        elif kind < 0.7:
            key, value = rng.choice(IDENTITY_KEYS), rng.choice(REFUSED_VALUES)
        else:
            key, value = f"k{rng.randint(0, 10**6)}", rng.choice(CLEAN_VALUES)
        members.append(f"{key}={value}{rng.choice(NOISE)}")
    return _clean(",".join(members))
