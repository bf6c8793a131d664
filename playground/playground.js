// Nimbus playground: mounts GraphiQL and gives it a fetcher that speaks to this
// server only. Queries and mutations are POSTed to /v1/graphql; subscriptions run
// over WebSocket at /v1/graphql/ws with the graphql-transport-ws protocol, through
// the small client below (no library, so nothing is loaded from anywhere else).
// Served as a file rather than inline so the page's CSP can stay script-src 'self'.
(function () {
  'use strict';

  var HTTP_PATH = '/v1/graphql';
  var WS_PATH = '/v1/graphql/ws';
  var ACCEPT = 'application/graphql-response+json, application/json';

  var DEFAULT_HEADERS = JSON.stringify(
    { 'X-Nimbus-Project': 'default', 'X-Nimbus-Key': '' },
    null,
    2
  );

  var DEFAULT_QUERY = [
    '# Welcome to the Nimbus playground.',
    '#',
    '# Queries and mutations go to ' + HTTP_PATH + ';',
    '# subscriptions run over a WebSocket at ' + WS_PATH + '.',
    '#',
    '# Headers (tab below):',
    '#   X-Nimbus-Project  the project to call',
    '#   X-Nimbus-Key      your API key',
    '# Headers left empty are not sent.',
    '#',
    '# Run:           Ctrl-Enter (Cmd-Enter on macOS)',
    '# Autocomplete:  Ctrl-Space',
    '# Prettify:      Shift-Ctrl-P',
    '# Schema docs:   book icon, top left',
    '',
    '{',
    '  __typename',
    '}',
    ''
  ].join('\n');

  // The header editor holds any JSON object; HTTP and connection_init both need
  // string values. Empty values are dropped so the pre-filled, still blank
  // X-Nimbus-Key means "no key" rather than "an empty, invalid key".
  function requestHeaders(headers) {
    var out = {};
    if (!headers || typeof headers !== 'object') {
      return out;
    }
    Object.keys(headers).forEach(function (name) {
      var value = headers[name];
      if (value === null || value === undefined || value === '') {
        return;
      }
      out[name] = typeof value === 'object' ? JSON.stringify(value) : String(value);
    });
    return out;
  }

  // GraphiQL hands us the parsed document of the query editor; pick the operation
  // that will run the same way the server does: by name, or the only one there is.
  function operationType(params, documentAST) {
    if (documentAST && Array.isArray(documentAST.definitions)) {
      var operations = documentAST.definitions.filter(function (definition) {
        return definition.kind === 'OperationDefinition';
      });
      var chosen = pickOperation(operations, params.operationName, function (operation) {
        return operation.name ? operation.name.value : null;
      });
      if (chosen) {
        return chosen.operation;
      }
    }
    return operationTypeFromText(params.query, params.operationName);
  }

  function pickOperation(operations, operationName, nameOf) {
    if (operationName) {
      return operations.filter(function (operation) {
        return nameOf(operation) === operationName;
      })[0];
    }
    return operations.length === 1 ? operations[0] : undefined;
  }

  // Fallback for calls without a parsed document: a scan of the top-level
  // definitions. Strings and comments are blanked first so their braces do not
  // count; parentheses are tracked so object defaults of variables do not either.
  function operationTypeFromText(query, operationName) {
    var source = String(query || '')
      .replace(/"""[\s\S]*?"""/g, '""')
      .replace(/"(?:[^"\\\n\r]|\\.)*"/g, '""')
      .replace(/#[^\n\r]*/g, '');
    var token = /[{}()]|@?[_A-Za-z][_0-9A-Za-z]*/g;
    var operations = [];
    var current = null;
    var depth = 0;
    var parens = 0;
    var match;
    while ((match = token.exec(source)) !== null) {
      var text = match[0];
      if (text === '(') {
        parens += 1;
        if (current) {
          current.awaitingName = false;
        }
      } else if (text === ')') {
        parens -= 1;
      } else if (text === '{') {
        if (depth === 0 && parens === 0) {
          if (!current) {
            operations.push({ type: 'query', name: null });
          } else if (current.type !== 'fragment') {
            operations.push(current);
          }
          current = null;
        }
        depth += 1;
      } else if (text === '}') {
        depth -= 1;
      } else if (depth === 0 && parens === 0) {
        if (!current) {
          if (text === 'query' || text === 'mutation' || text === 'subscription') {
            current = { type: text, name: null, awaitingName: true };
          } else if (text === 'fragment') {
            current = { type: 'fragment' };
          }
        } else if (current.awaitingName) {
          current.awaitingName = false;
          if (text.charAt(0) !== '@') {
            current.name = text;
          }
        }
      }
    }
    var chosen = pickOperation(operations, operationName, function (operation) {
      return operation.name;
    });
    return chosen ? chosen.type : 'query';
  }

  // Problems on the client's side are shown the way GraphQL errors are, rather
  // than thrown: GraphiQL would print a thrown Error with its JavaScript stack.
  function clientError(message) {
    return { errors: [{ message: message }] };
  }

  function postOverHttp(params, headers) {
    var allHeaders = { Accept: ACCEPT, 'Content-Type': 'application/json' };
    Object.keys(headers).forEach(function (name) {
      allHeaders[name] = headers[name];
    });
    return fetch(HTTP_PATH, {
      method: 'POST',
      headers: allHeaders,
      credentials: 'same-origin',
      body: JSON.stringify(params)
    }).then(function (response) {
      // application/graphql-response+json answers errors with 4xx and a JSON
      // body; show that body, and the raw text only when it is not JSON.
      return response.text().then(function (text) {
        try {
          return JSON.parse(text);
        } catch (_) {
          return clientError(
            'HTTP ' + response.status + ' ' + response.statusText + (text ? ': ' + text.slice(0, 2000) : '')
          );
        }
      });
    }, function (error) {
      return clientError('Could not reach ' + HTTP_PATH + ': ' + error.message);
    });
  }

  function webSocketUrl() {
    var scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    return scheme + '//' + window.location.host + WS_PATH;
  }

  // One socket per subscription: it lives exactly as long as the subscription,
  // so stopping it in GraphiQL closes the socket and nothing is left to clean up.
  // The returned object is its own async iterator because GraphiQL stops a
  // subscription by calling value[Symbol.asyncIterator]().return().
  function subscribeOverWebSocket(params, headers) {
    var id = '1';
    var socket = new WebSocket(webSocketUrl(), 'graphql-transport-ws');
    var results = [];
    var waiter = null;
    var subscribed = false;
    var finished = false;

    function send(message) {
      if (socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify(message));
      }
    }

    // Hands the oldest result, or the end, to a pending next() call.
    function settle() {
      if (!waiter) {
        return;
      }
      var pending = waiter;
      if (results.length > 0) {
        waiter = null;
        pending.resolve({ value: results.shift(), done: false });
      } else if (finished) {
        waiter = null;
        pending.resolve({ value: undefined, done: true });
      }
    }

    // Ends the subscription, with an error message as its last result if given.
    function finish(errorMessage) {
      if (finished) {
        return;
      }
      finished = true;
      if (errorMessage) {
        results.push(clientError(errorMessage));
      }
      if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) {
        socket.close(1000, 'Normal Closure');
      }
      settle();
    }

    socket.onopen = function () {
      send({ type: 'connection_init', payload: headers });
    };

    socket.onmessage = function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (_) {
        finish('The server sent a subscription message that is not JSON.');
        return;
      }
      switch (message && message.type) {
        case 'connection_ack':
          subscribed = true;
          send({
            id: id,
            type: 'subscribe',
            payload: { query: params.query, variables: params.variables, operationName: params.operationName }
          });
          break;
        case 'ping':
          send({ type: 'pong' });
          break;
        case 'pong':
          break;
        case 'next':
          if (message.id === id) {
            results.push(message.payload);
            settle();
          }
          break;
        case 'error':
          // The payload is a list of GraphQL errors; show it like any result.
          if (message.id === id) {
            subscribed = false;
            results.push({ errors: message.payload });
            finish();
          }
          break;
        case 'complete':
          if (message.id === id) {
            subscribed = false;
            finish();
          }
          break;
        default:
          finish('Unexpected subscription message type: ' + JSON.stringify(message && message.type));
      }
    };

    socket.onclose = function (event) {
      if (finished) {
        return;
      }
      // 4401/4403 and friends are how graphql-transport-ws servers refuse a
      // connection_init; their reason is the only explanation the user gets.
      finish(
        event.code === 1000
          ? null
          : 'The subscription socket closed (code ' + event.code + (event.reason ? ': ' + event.reason : '') + ').'
      );
    };

    var iterator = {
      next: function () {
        return new Promise(function (resolve) {
          waiter = { resolve: resolve };
          settle();
        });
      },
      return: function () {
        if (!finished && subscribed) {
          send({ id: id, type: 'complete' });
        }
        finish();
        return Promise.resolve({ value: undefined, done: true });
      }
    };
    iterator[Symbol.asyncIterator] = function () {
      return iterator;
    };
    return iterator;
  }

  function fetcher(params, opts) {
    var headers = requestHeaders(opts && opts.headers);
    if (operationType(params, opts && opts.documentAST) === 'subscription') {
      return subscribeOverWebSocket(params, headers);
    }
    return postOverHttp(params, headers);
  }

  // GraphiQL keeps the header editor (so the API key), its tabs and its history
  // (which records each run's headers too) in the storage it is given, by default
  // localStorage: the key would outlive the tab and be readable by every page of
  // this origin, the console included, for as long as the browser keeps it. The
  // tab's sessionStorage keeps all of it across reloads and forgets it with the tab.
  var PREFIX = 'graphiql:';
  function ownKeys(store) {
    var keys = [];
    for (var i = 0; i < store.length; i++) {
      var key = store.key(i);
      if (key && key.indexOf(PREFIX) === 0) {
        keys.push(key);
      }
    }
    return keys;
  }
  var tabStorage = {
    getItem: function (key) { return sessionStorage.getItem(key); },
    setItem: function (key, value) { sessionStorage.setItem(key, value); },
    removeItem: function (key) { sessionStorage.removeItem(key); },
    clear: function () { ownKeys(sessionStorage).forEach(function (key) { sessionStorage.removeItem(key); }); },
    get length() { return ownKeys(sessionStorage).length; }
  };
  // What earlier versions of this page left in localStorage (keys among it) goes.
  try {
    ownKeys(localStorage).forEach(function (key) { localStorage.removeItem(key); });
  } catch (e) {
    // Storage disabled: nothing was kept there either.
  }

  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: DEFAULT_QUERY,
      defaultHeaders: DEFAULT_HEADERS,
      storage: tabStorage,
      shouldPersistHeaders: true,
      defaultEditorToolsVisibility: 'headers'
    })
  );
})();
