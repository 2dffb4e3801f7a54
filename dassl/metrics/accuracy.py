def compute_accuracy(output, target, topk=(1,)):
    """Top-k accuracies in percent of ``output`` (N x C logits) against ``target`` (N labels).

    Returns a list with one 1-element tensor per k, as Dassl does.
    """
    if isinstance(output, (tuple, list)):
        output = output[0]
    maxk = max(topk)
    batch_size = target.size(0)
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1).expand(maxk, -1))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / batch_size) for k in topk]
