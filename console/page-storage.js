// Storage: buckets and their settings, and one bucket's files with thumbnails,
// resumable chunked uploads with a progress bar, downloads, each file's
// permissions and deletion. File bytes are fetched with the credential headers and
// shown through object URLs.
import { html, useState, useEffect } from "./lib.js";
import * as api from "./api.js";
import {
  Check,
  ErrorBox,
  Field,
  Loading,
  PermissionsEditor,
  TypedConfirm,
  formatBytes,
  formatDate,
  href,
  summarizePermissions,
  useAction,
  useAsync,
} from "./ui.js";

export function Storage() {
  const list = useAsync(
    () => api.gql("query ConsoleBuckets { buckets(first: 100) { nodes { id name enabled fileSecurity permissions maximumFileSize } } }"),
    [],
  );
  const [id, setId] = useState("");
  const [name, setName] = useState("");
  const [fileSecurity, setFileSecurity] = useState(false);
  const [permissions, setPermissions] = useState([]);
  const create = useAction(() =>
    api.gql(`mutation ConsoleCreateBucket($input: CreateBucketInput!) { createBucket(input: $input) { id } }`, {
      input: { name, fileSecurity, permissions, ...(id ? { id } : {}) },
    }),
  );
  const submit = async (e) => {
    e.preventDefault();
    if (await create.run()) {
      setId("");
      setName("");
      list.reload();
    }
  };
  return html`<section aria-labelledby="storage-title">
    <h1 id="storage-title">Storage</h1>
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data && html`<${Loading} what="buckets" />`}
    ${list.data &&
    html`<ul class="plain cards">
      ${list.data.buckets.nodes.map(
        (b) => html`<li class="card">
          <a href=${href("storage", b.id)}><strong>${b.name}</strong></a> <code>${b.id}</code>
          <div class="muted">up to ${formatBytes(b.maximumFileSize)} a file</div>
          <div class="muted">${summarizePermissions(b.permissions).join(" ")}</div>
        </li>`,
      )}
      ${!list.data.buckets.nodes.length && html`<li class="muted">No buckets yet.</li>`}
    </ul>`}
    <form class="card" onSubmit=${submit} aria-labelledby="new-bucket">
      <h2 id="new-bucket">New bucket</h2>
      <div class="row">
        <${Field} label="Name" value=${name} onInput=${setName} required />
        <${Field} label="Id (optional)" value=${id} onInput=${setId} />
      </div>
      <${Check} label="File security (each file's own permissions count too)" checked=${fileSecurity} onChange=${setFileSecurity} />
      <${PermissionsEditor} value=${permissions} onChange=${setPermissions} />
      <button disabled=${create.pending}>Create bucket</button>
      <${ErrorBox} error=${create.error} />
    </form>
  </section>`;
}

function Thumbnail({ file }) {
  const [url, setUrl] = useState(null);
  const [failed, setFailed] = useState(false);
  const previewable = /^image\//.test(file.mimeType) && file.status === "READY" && file.previewUrl;
  useEffect(() => {
    if (!previewable) return undefined;
    let made = null;
    let live = true;
    api.objectUrl(file.previewUrl).then(
      (u) => {
        made = u;
        if (live) setUrl(u);
        else URL.revokeObjectURL(u);
      },
      () => live && setFailed(true),
    );
    return () => {
      live = false;
      if (made) URL.revokeObjectURL(made);
    };
  }, [file.id, file.updatedAt]);
  if (!previewable || failed) return html`<div class="thumb placeholder" aria-hidden="true">${file.mimeType.split("/")[1] || "file"}</div>`;
  return url ? html`<img class="thumb" src=${url} alt=${`Preview of ${file.name}`} />` : html`<div class="thumb placeholder" aria-hidden="true">…</div>`;
}

async function download(file) {
  const url = await api.objectUrl(file.downloadUrl);
  const a = document.createElement("a");
  a.href = url;
  a.download = file.name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function Upload({ bucketId, onUploaded }) {
  const [progress, setProgress] = useState(null);
  const [resuming, setResuming] = useState(false);
  const act = useAction(async (file) => {
    setProgress(0);
    try {
      await api.uploadFile(bucketId, file, (fraction, how) => {
        setProgress(fraction);
        setResuming(Boolean(how && how.resuming));
      });
    } finally {
      setProgress(null);
      setResuming(false);
    }
    return true;
  });
  const choose = async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (file && (await act.run(file))) onUploaded();
  };
  return html`<div class="card">
    <label for="upload">Upload a file</label>
    <input id="upload" type="file" onChange=${choose} disabled=${act.pending} />
    ${progress != null &&
    html`<div class="row">
      <progress max="1" value=${progress} aria-label="Upload progress"></progress>
      <span>${Math.round(progress * 100)}%</span>
      ${resuming && html`<span role="status">Connection lost; resuming…</span>`}
    </div>`}
    <${ErrorBox} error=${act.error} />
  </div>`;
}

/** One file's own permissions (they count when the bucket has file security). */
function FilePermissions({ bucketId, file, fileSecurity, onSaved }) {
  const [permissions, setPermissions] = useState(file.permissions);
  const save = useAction(() =>
    api.gql(`mutation ConsoleUpdateFile($input: UpdateFileInput!) { updateFile(input: $input) { id permissions } }`, {
      input: { bucketId, fileId: file.id, permissions },
    }),
  );
  return html`<details>
    <summary>Permissions of ${file.name}</summary>
    ${!fileSecurity && html`<p class="muted">File security is off in this bucket: only the bucket's permissions count.</p>`}
    <${PermissionsEditor} value=${permissions} onChange=${setPermissions} actions=${["read", "update", "delete", "write"]} />
    <button class="secondary" disabled=${save.pending} onClick=${async () => (await save.run()) && onSaved()}>Save permissions</button>
    <${ErrorBox} error=${save.error} />
  </details>`;
}

export function BucketPage({ bucketId }) {
  const [after, setAfter] = useState([]);
  const cursor = after[after.length - 1] || null;
  const data = useAsync(
    () =>
      api.gql(
        `query ConsoleFiles($bucket: ID!, $after: String) {
          bucket(id: $bucket) { id name permissions fileSecurity maximumFileSize }
          files(bucketId: $bucket, first: 24, after: $after) {
            totalCount pageInfo { hasNextPage endCursor }
            nodes { id name status mimeType size permissions createdAt updatedAt downloadUrl previewUrl(width: 160, height: 160) }
          }
        }`,
        { bucket: bucketId, after: cursor },
      ),
    [bucketId, cursor],
  );
  const [error, setError] = useState(null);
  const remove = async (file) => {
    if (!confirm(`Delete ${file.name}?`)) return;
    try {
      await api.gql(`mutation ConsoleDeleteFile($input: DeleteFileInput!) { deleteFile(input: $input) { __typename } }`, {
        input: { bucketId, fileId: file.id },
      });
      data.reload();
    } catch (err) {
      setError(err);
    }
  };
  const files = data.data && data.data.files;
  return html`<section aria-labelledby="bucket-title">
    <p><a href=${href("storage")}>Storage</a> /</p>
    <h1 id="bucket-title">Bucket ${bucketId}</h1>
    <${ErrorBox} error=${data.error || error} />
    ${data.loading && !data.data && html`<${Loading} what="files" />`}
    <${Upload} bucketId=${bucketId} onUploaded=${data.reload} />
    ${files &&
    html`<p class="muted">${files.totalCount} files</p>
      <ul class="plain files">
        ${files.nodes.map(
          (f) => html`<li class="card file">
            <${Thumbnail} file=${f} />
            <div>
              <strong>${f.name}</strong>
              <div class="muted">${formatBytes(f.size)} · ${f.mimeType} · ${formatDate(f.createdAt)}</div>
              ${f.status !== "READY" && html`<span class="badge warn">${f.status}</span>`}
              <div class="row">
                <button class="secondary" onClick=${() => download(f).catch(setError)} disabled=${!f.downloadUrl} aria-label=${`Download ${f.name}`}>
                  Download
                </button>
                <button class="secondary" onClick=${() => remove(f)} aria-label=${`Delete ${f.name}`}>Delete</button>
              </div>
              <${FilePermissions}
                key=${f.id + f.updatedAt}
                bucketId=${bucketId}
                file=${f}
                fileSecurity=${data.data.bucket.fileSecurity}
                onSaved=${data.reload}
              />
            </div>
          </li>`,
        )}
      </ul>
      <div class="row">
        <button class="secondary" disabled=${!after.length} onClick=${() => setAfter(after.slice(0, -1))}>Previous</button>
        <button class="secondary" disabled=${!files.pageInfo.hasNextPage} onClick=${() => setAfter([...after, files.pageInfo.endCursor])}>
          Next
        </button>
      </div>`}
    ${data.data &&
    html`<details class="card">
      <summary>Delete this bucket</summary>
      <${TypedConfirm}
        word=${bucketId}
        label="Delete bucket"
        action=${() => api.gql(`mutation ConsoleDeleteBucket($input: DeleteBucketInput!) { deleteBucket(input: $input) { __typename } }`, { input: { id: bucketId } })}
        onDone=${() => (location.hash = href("storage"))}
      />
    </details>`}
  </section>`;
}
