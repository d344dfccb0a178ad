"""What refusing duplicate JSON keys costs a request body (`api/bodies.py`): orjson's parse,
which every body had, against the second pass that looks for duplicate keys, on bodies
of the shapes crewq takes. Prints microseconds per body; asserts nothing.

    python -m benchmarks.json_bodies [--repeat N]
"""

import argparse
import timeit

import orjson

from api.bodies import duplicate_key

BODIES: dict[str, bytes] = {
    "small job": orjson.dumps(
        {"crew": "echo", "inputs": {"message": "hello"}, "metadata": {"team": "red"}}
    ),
    "one 900 KB string": orjson.dumps({"crew": "echo", "inputs": {"message": "y" * 900_000}}),
    "20,000 small objects": orjson.dumps(
        {"crew": "echo", "inputs": {"rows": [{"id": i, "name": f"n{i}"} for i in range(20_000)]}}
    ),
}


def main(repeat: int) -> None:
    print(f"{'body':24} {'bytes':>9} {'orjson µs':>10} {'dup check µs':>13}")
    for name, body in BODIES.items():
        parse = min(timeit.repeat(lambda b=body: orjson.loads(b), number=1, repeat=repeat))  # type: ignore[misc]
        check = min(timeit.repeat(lambda b=body: duplicate_key(b), number=1, repeat=repeat))  # type: ignore[misc]
        print(f"{name:24} {len(body):>9} {parse * 1e6:>10.0f} {check * 1e6:>13.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    main(parser.parse_args().repeat)
