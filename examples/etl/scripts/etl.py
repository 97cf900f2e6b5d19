"""Steps of the example ETL: plain functions and classes, as digdag's py> calls them."""

import json
import random

import digdag


def extract(day, source, orders=None):
    """Pretend to pull the day's orders from `source`; deterministic per day."""
    rng = random.Random(f"{source}:{day}")
    rows = [{"id": i, "amount": rng.randint(1, 100)} for i in range(int(orders or 20))]
    with open("orders.json", "w") as f:  # visible to this task only: workspaces are isolated
        json.dump(rows, f)
    print(f"extracted {len(rows)} orders for {day} from {source}")
    digdag.env.store({"extracted_count": len(rows), "orders": rows})


class Transform:
    def __init__(self, min_amount):
        self.min_amount = int(min_amount)

    def run(self, orders):
        kept = [o for o in orders if o["amount"] >= self.min_amount]
        total = sum(o["amount"] for o in kept)
        print(f"kept {len(kept)} of {len(orders)} orders with amount >= {self.min_amount}")
        digdag.env.store({"transformed_count": len(kept), "transformed_total": total})
