#!/usr/bin/env python3
"""Independent reference for the KD loss of docs/training.md ("The loss").

Written from the definition, not from train/kd_loss.cpp: the teacher's top-K
and "other" mass come from its full logits (torch.topk over the full
softmax), the student's buckets are picked out of its full-vocabulary softmax
at temperature 1, both sides' K+1 bucket masses are then tempered the same
way (mass^(1/tau), renormalised over the K+1 buckets), and the gradient with
respect to the student's logits comes from autograd.

Usage: kd_loss_ref.py DIR. DIR holds case.json ({"n","V","K","configs":[...]})
and teacher.bin, student.bin (float32 [n, V]), targets.bin (int32 [n], -1:
none), struct.bin (uint8 [n]). Writes ids.bin (int32 [n, K]), lps.bin
(float32 [n, K]), other.bin (float32 [n]), and per config j loss_j.txt and
grad_j.bin (float32 [n, V]).
"""
import json
import os
import sys

import numpy as np
import torch

STUDENT_OTHER_FLOOR = 1e-12


def read(d, name, dtype, shape):
    return torch.from_numpy(np.fromfile(os.path.join(d, name), dtype=dtype).reshape(shape))


def divergence(kind, p, q):
    if kind == "kl":
        return (q * (q.log() - p.log())).sum()
    if kind == "reverse_kl":
        return (p * (p.log() - q.log())).sum()
    if kind == "jsd":
        m = 0.5 * (p + q)
        return 0.5 * (q * (q.log() - m.log())).sum() + 0.5 * (p * (p.log() - m.log())).sum()
    raise ValueError(kind)


def tempered(masses, tau):
    w = masses ** (1.0 / tau)
    return w / w.sum()


def main():
    d = sys.argv[1]
    case = json.load(open(os.path.join(d, "case.json")))
    n, V, K = case["n"], case["V"], case["K"]
    teacher = read(d, "teacher.bin", np.float32, (n, V)).double()
    student0 = read(d, "student.bin", np.float32, (n, V)).double()
    targets = read(d, "targets.bin", np.int32, (n,)).long()
    struct = read(d, "struct.bin", np.uint8, (n,)).bool()

    # The teacher's top-K and other mass from its full distribution.
    q_full = torch.softmax(teacher, dim=-1)
    q_top, ids = torch.topk(q_full, K, dim=-1)
    q_other = 1.0 - q_top.sum(dim=-1)
    ids.int().numpy().astype(np.int32).tofile(os.path.join(d, "ids.bin"))
    q_top.log().float().numpy().tofile(os.path.join(d, "lps.bin"))
    q_other.log().float().numpy().tofile(os.path.join(d, "other.bin"))

    for j, cfg in enumerate(case["configs"]):
        tau = cfg["tau"]
        kdw = cfg["kd_weight"] * (tau * tau if cfg["tau2_scale"] else 1.0)
        z = student0.clone().requires_grad_(True)
        p_full = torch.softmax(z, dim=-1)
        terms = []
        for i in range(n):
            has_t = targets[i] >= 0
            train = cfg["kd_weight"] > 0
            w = (cfg["ce_weight"] if train else cfg["plain_ce_weight"]) + (cfg["format_weight"] if struct[i] else 0.0)
            if not ((has_t and w > 0) or train):
                continue
            row = torch.zeros((), dtype=torch.float64)
            if train:
                p_top = p_full[i, ids[i]]
                p_other = torch.clamp(1.0 - p_top.sum(), min=STUDENT_OTHER_FLOOR)
                q = tempered(torch.cat([q_top[i], q_other[i:i + 1]]), tau)
                p = tempered(torch.cat([p_top, p_other.reshape(1)]), tau)
                row = row + kdw * divergence(cfg["divergence"], p, q)
            if has_t:
                row = row - w * torch.log_softmax(z[i], dim=-1)[targets[i]]
            terms.append(row)
        loss = torch.stack(terms).sum() / len(terms) if terms else z.sum() * 0.0
        loss.backward()
        with open(os.path.join(d, "loss_%d.txt" % j), "w") as f:
            f.write("%.17g\n" % loss.item())
        z.grad.float().numpy().tofile(os.path.join(d, "grad_%d.bin" % j))


if __name__ == "__main__":
    main()
