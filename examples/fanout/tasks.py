"""Per-region publish and the fan-in summary."""

import digdag


def publish(region):
    print(f"published {region}")
    # each branch stores under its own key, so the fan-in sees every branch
    digdag.env.store({f"published_{region}": True})


def summarize(**params):
    regions = sorted(k[len("published_") :] for k in params if k.startswith("published_"))
    print(f"published regions: {','.join(regions)}")
    digdag.env.store({"published": ",".join(regions)})
