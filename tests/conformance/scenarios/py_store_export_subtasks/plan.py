import digdag


def make_steps():
    digdag.env.store({"planned_by": "make_steps"})
    digdag.env.export({"batch": "b1"})
    digdag.env.add_subtask({"sh>": 'echo "${task_name} batch=${batch}" >> out.txt'})
    digdag.env.add_subtask(step, label="second")
    digdag.env.add_subtask(action="third", **{"sh>": 'echo "${task_name} ${action}" >> out.txt'})


def step(label):
    with open("out.txt", "a") as f:
        f.write(f"step label={label} batch={digdag.env.params['batch']}\n")


class Counter:
    def save(self):
        digdag.env.store({"count": 2})
