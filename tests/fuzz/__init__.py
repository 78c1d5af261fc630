"""caffe-py's fuzz suite: real small files of every kind caffe-py reads, mutated by a seeded
generator, each case run by a persistent worker process under a time and memory limit.

Every case ends as one outcome (targets.OUTCOMES): loaded; refused (a caffe-py error, on one
line, naming the file, a file it lists or a layer); or a failure: a vague refusal (a caffe-py
error naming none of them), an internal error (any other exception), a memory blow-up
(MemoryError), a crash (the worker killed by a signal) or a hang (no answer in time).

    python -m tests.fuzz --cases 20000 --seed 17     # the table of cases per reader and outcome
"""
