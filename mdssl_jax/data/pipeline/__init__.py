"""Multi-domain, multi-view training batches in tf.data (METHODS §2.6, §3.6).

Synopsis::

  domains = sources.load_domains(config.data)
  it = pipeline.make_train_iterator(config, domains, start_step=step)
  batch = next(it)
  batch["large"]    # [D*N, L, H, W, 3] float32, normalised
  batch["small"]    # [D*N, S, h, w, 3] float32 (absent when S == 0)
  batch["domain"]   # [D*N] int32: row d*N + i belongs to domain d
  batch["label"]    # [D*N] int32 (for online probes only)
  batch["index"]    # [D*N] int64: row's index into its domain's train set
                    #   (stream position for streaming domains)

Every step draws exactly N = ``config.data.per_domain_batch`` images from
each of the D domains ("dataset batches", paper A.5). Each domain has its own
infinite stream: epoch e of domain d is a stateless permutation seeded by
(seed, d, e), and step s takes stream positions s·N … s·N + N − 1, so a small
domain simply cycles faster. The whole batch of step s, augmentations
included, is a pure function of (config.seed, config.data.seed for
streaming domains, s): starting at
``start_step`` (resume) gives exactly the batches an uninterrupted run sees.
All view randomness of a step comes from one stateless draw seeded by
(seed, step) and shaped [D*N, views, NUM_UNIFORMS], so the view of
(domain, row, view) is fixed by those indices and does not depend on the
process count.

View numbering follows METHODS.md §3.6: large views 1, 3, … and small view 1
use ``config.augment.odd``; large views 2, 4, … and small view 2 use
``config.augment.even``. RELICv2 saliency masking (§3.7) is applied to each
large view independently (a fresh draw per view; never to small views) when
a domain has masks and ``config.saliency.prob > 0``.

Multi-process: process p gets rows [p·B/P, (p+1)·B/P) of the global batch
(B = D·N must be divisible by P).

Streaming TFDS domains (``DomainData.stream``; e.g. ImageNet at 224 px) are
read from disk instead of memory and mix freely with in-memory domains:

* Order: the domain's stream is epoch 0, 1, 2, … concatenated. Epoch e reads
  every example of the split once: its tfrecord shards in a stateless
  permutation seeded by (config.data.seed, domain, e), 16 shards
  interleaved, then a ``config.data.shuffle_buffer``-example shuffle buffer
  seeded the same way (buffer entries are encoded images: ~1 GB for 10 000
  ImageNet JPEGs). Step s takes stream positions s·N … s·N + N − 1, as for
  in-memory domains; the order is a function of the data seed only.
* Decoding: records are read with the image undecoded
  (``tfds.decode.SkipDecoding``); only this process's rows are decoded,
  once per image, and every view is cropped from the full-resolution image
  (``augment.random_resized_crop``; same window rule and resampling as the
  in-memory crop) after that view's saliency masking when the domain has a
  ``mask_key``. The colour ops then run batched
  (``augment.augment_cropped_batch``). View uniforms derive from
  (config.seed, step, global row), saliency draws likewise.
* Resume: starting at step s skips whole epochs without reading them and
  then skips (s·N) mod n records of the current epoch: each is read and
  parsed but not decoded, so a resume costs at most one epoch of I/O
  (ImageNet: up to one pass over ~140 GB of records, minutes from local
  disk) and yields exactly the batches an uninterrupted run would have
  produced.
* Multi-process: every process reads the full record stream of each
  streaming domain it has rows in (so batches do not depend on the process
  count) but decodes only its own rows.
* The "index" of a streamed row is its stream position s·N + i (TFDS
  records carry no stable index).

Pseudo-domains (``config.data.domain_labels`` "kmeans"/"robust_kmeans",
MDSSL without domain labels): the in-memory domains are pooled and each
step draws N rows per pseudo-domain of the run's table instead (module
``pseudo``; pass ``pseudo_table=``); "domain" is then the pseudo-domain,
"index" the pooled row, and the batch also carries "source_domain" and
"valid".

Modules: ``batches`` (the step stream, :func:`make_train_iterator`),
``memory`` and ``streaming`` (the rows of in-memory and streaming domains),
``views`` (view specs), ``settings`` (step-wide settings, seeds),
``eval_arrays`` (:func:`make_eval_arrays`), ``pseudo`` (pseudo-domain
rows, :class:`PseudoTable`).
"""

# pylint: disable=unused-import
from mdssl_jax.data.pipeline.batches import make_train_dataset
from mdssl_jax.data.pipeline.batches import make_train_iterator
from mdssl_jax.data.pipeline.eval_arrays import make_eval_arrays
from mdssl_jax.data.pipeline.pseudo import Table as PseudoTable
from mdssl_jax.data.pipeline.views import view_specs_from_config
from mdssl_jax.data.pipeline.views import ViewSpec
